"""Resolution: from the names a scenario or command gives to the device, the runtime estimator and
its configuration, with the reason for each choice."""
