"""Collective times of one replica (TP all-reduce, PP send/recv) for the estimators."""

from __future__ import annotations

import json

import numpy as np

from vidur.errors import VidurError
from vidur.hardware import collective
from vidur.hardware.spec import NodeSpec
from vidur.fit.collectives import calibration, fits_from_json
from vidur.store.profiles import Profile


class CommModel:
    """Collective times for one replica: measured tables where a node was measured, else the ring model.

    Order of preference: the profile's own ``network.json`` (imported or
    measured), the calibration shipped for the node type
    (:func:`vidur.fit.collectives.calibration`), the nominal link of the
    node spec (:mod:`vidur.hardware.collective`).
    """

    def __init__(self, node: NodeSpec, tp: int, pp: int, profile: Profile | None = None):
        self.node = node
        self.tp = tp
        self.pp = pp
        self._c = collective
        self.inter_node_pp = tp * pp > node.num_devices
        cal = calibration(node.name)
        own = _profile_network(profile) if profile is not None else None
        self.all_reduce_fit = (own or {}).get(("all_reduce", tp, tp)) or cal.get(("all_reduce", tp, tp))
        dpn = 1 if self.inter_node_pp else 2
        self.send_recv_fit = (own or {}).get(("send_recv", 2, dpn)) or cal.get(("send_recv", 2, dpn))
        if self.all_reduce_fit is not None:
            self.params = self.all_reduce_fit.params
        else:
            self.params = collective.link_params(node, tp)
        self.source = "measured" if self.all_reduce_fit is not None else "nominal"

    def all_reduce(self, nbytes: float) -> float:
        if self.tp <= 1 or nbytes <= 0:
            return 0.0
        if self.all_reduce_fit is not None:
            return self.all_reduce_fit.table_time(nbytes)
        return self._c.all_reduce_time(self.node, self.tp, nbytes)

    def all_reduce_array(self, nbytes: np.ndarray) -> np.ndarray:
        if self.all_reduce_fit is not None:
            return self.all_reduce_fit.curve.eval_array(np.maximum(nbytes, 1.0))
        return np.array([self._c.all_reduce_time(self.node, self.tp, float(b)) for b in nbytes])

    def all_gather(self, nbytes: float) -> float:
        if self.tp <= 1 or nbytes <= 0:
            return 0.0
        return self._c.all_gather_time(self.node, self.tp, nbytes, self.params)

    def send_recv(self, nbytes: float) -> float:
        if nbytes <= 0:
            return 0.0
        if self.send_recv_fit is not None:
            return self.send_recv_fit.table_time(nbytes)
        return self._c.send_recv_time(self.node, nbytes, inter_node=self.inter_node_pp)


def _profile_network(profile: Profile) -> dict | None:
    f = profile.path / "network.json"
    if not f.is_file():
        return None
    try:
        return fits_from_json(json.loads(f.read_text(encoding="utf-8")), profile.device)
    except (ValueError, KeyError, TypeError) as exc:
        raise VidurError(f"{f} is corrupt ({exc}); re-import the network profile") from None
