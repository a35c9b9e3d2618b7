"""A third-party estimator wraps the one ``auto`` resolves to and keeps the
vectorised fast-forward path; inconsistent decode pricing stops the run in one line."""

from __future__ import annotations

import attrs
import numpy as np
import pytest

from vidur.errors import PluginError
from vidur.estimate.wrap import WrapperConfig, WrappingEstimator


@attrs.frozen(kw_only=True)
class ScaledConfig(WrapperConfig):
    factor: float = 1.1


class Scaled(WrappingEstimator):
    """Every time of the inner estimator times ``factor``."""

    name = "scaled"
    Config = ScaledConfig
    longest_block = 0  # the most decode iterations priced in one vectorised call (class-wide, for the test)

    def forward_time(self, shape):
        return self.config.factor * self.inner.forward_time(shape)

    def cpu_overhead(self, num_seqs):
        return self.config.factor * self.inner.cpu_overhead(num_seqs)

    def decode_iteration_time(self, num_decode, decode_kv):
        return self.config.factor * self.inner.decode_iteration_time(num_decode, decode_kv)

    def decode_iteration_times(self, num_decode, decode_kv):
        type(self).longest_block = max(type(self).longest_block, len(decode_kv))
        return self.config.factor * self.inner.decode_iteration_times(num_decode, decode_kv)


class ForwardOnly(WrappingEstimator):
    """Scales forward_time but leaves the decode-only prices to the inner estimator."""

    name = "forward_only"

    def forward_time(self, shape):
        return 1.1 * self.inner.forward_time(shape)


def _durations(result):
    b = result.records.batches
    return np.asarray(b["end"]) - np.asarray(b["start"])


# every request arrives before the first batch ends, so both runs form the same batches
_BURST = dict(num_requests=6, qps=1e9, output_tokens=40, num_replicas=1)


def test_a_wrapper_over_auto_scales_the_times_and_keeps_fast_forward(vidur_register, tiny_cluster):
    vidur_register(Scaled)
    Scaled.longest_block = 0
    plain = tiny_cluster(settings={"runtime_estimator": "auto"}, **_BURST)
    scaled = tiny_cluster(settings={"runtime_estimator": {"name": "scaled", "inner": "auto", "factor": 1.1}}, **_BURST)
    assert Scaled.longest_block > 1  # fast-forward priced a run of decode iterations in one call
    assert scaled.provenance.estimator == "scaled" and scaled.provenance.wraps == plain.provenance.estimator
    a, b = _durations(plain), _durations(scaled)
    assert len(a) == len(b) > 0
    np.testing.assert_allclose(b, 1.1 * a, rtol=1e-9)
    stepped = tiny_cluster(settings={"runtime_estimator": {"name": "scaled", "inner": "auto"}}, step_mode=True, **_BURST)
    np.testing.assert_array_equal(np.asarray(stepped.records.batches["end"]), np.asarray(scaled.records.batches["end"]))


def test_a_wrapper_over_a_named_estimator(vidur_register, tiny_cluster):
    vidur_register(Scaled)
    r = tiny_cluster(settings={"runtime_estimator": {"name": "scaled", "inner": "roofline", "factor": 2.0}}, **_BURST)
    assert r.provenance.wraps == "roofline" and "wraps roofline" in r.provenance.header()


def test_inconsistent_vectorised_pricing_stops_the_run_naming_the_plugin(vidur_register, tiny_cluster):
    vidur_register(ForwardOnly)
    with pytest.raises(PluginError) as exc:
        tiny_cluster(settings={"runtime_estimator": "forward_only"}, **_BURST)
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith("runtime estimator 'forward_only' from plugin 'test:forward_only'"), msg
    assert "forward_time + cpu_overhead" in msg


def test_a_wrapper_cannot_wrap_itself(vidur_register, tiny_cluster):
    from vidur.errors import VidurError

    vidur_register(Scaled)
    with pytest.raises(VidurError, match="cannot wrap itself"):
        tiny_cluster(settings={"runtime_estimator": {"name": "scaled", "inner": "scaled"}}, **_BURST)


def test_two_wrappers_wrapping_each_other_are_one_line(vidur_register, tiny_cluster):
    from vidur.errors import VidurError

    @attrs.frozen(kw_only=True)
    class OtherConfig(WrapperConfig):
        inner: str = "scaled"

    class Other(WrappingEstimator):
        name = "other"
        Config = OtherConfig

    vidur_register(Scaled)
    vidur_register(Other)
    with pytest.raises(VidurError, match="wraps itself through scaled -> other -> scaled"):
        tiny_cluster(settings={"runtime_estimator": {"name": "scaled", "inner": "other"}}, **_BURST)
