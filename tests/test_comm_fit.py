"""Collective model calibration on the measured NCCL times (vidur-profiles/network)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vidur.errors import VidurError
from vidur.fit import collectives as comm_fit
from vidur.hardware.collective import LinkParams

REPO = Path(__file__).resolve().parents[1]
NETWORK = REPO.parent / "shared" / "data" / "vidur-profiles" / "network"
need_data = pytest.mark.skipif(not NETWORK.is_dir(), reason="shared vidur-profiles data not present")

#: per-GPU unidirectional NVLink bandwidth, an upper bound on NCCL bus bandwidth
NVLINK_CAP = {"a100_dgx": 300e9, "h100_dgx": 450e9}


@pytest.fixture(scope="module")
def fits():
    return comm_fit.fit_all(NETWORK)


def test_fit_params_recover_a_synthetic_link():
    p = LinkParams(bandwidth=200e9, latency=4e-6)
    sizes = np.geomspace(2048, 64 << 20, 50)
    t = comm_fit.model_time("all_reduce", 4, sizes, p)
    got = comm_fit.fit_params("all_reduce", 4, sizes, t)
    assert got.bandwidth == pytest.approx(p.bandwidth, rel=1e-6)
    assert got.latency == pytest.approx(p.latency, rel=1e-6)


@need_data
def test_size_column_is_bytes_not_fp16_elements(fits):
    """Read as bytes, the intra-node bus bandwidth stays under the NVLink cap; as fp16 elements it would exceed it."""
    checks = [r for node in NVLINK_CAP for r in comm_fit.size_unit_check(fits[node]) if r["devices_per_node"] == r["world"]]
    assert checks
    for r in checks:
        cap = NVLINK_CAP[r["node"]] / 1e9
        assert r["busbw_if_bytes_GBps"] <= cap, r
    assert max(r["busbw_if_fp16_elements_GBps"] / (NVLINK_CAP[r["node"]] / 1e9) for r in checks) > 1.0


@need_data
def test_fit_error_per_node_type(fits):
    for node, fs in fits.items():
        s = comm_fit.node_summary(fs)
        assert s["table_mape"] < 6.0, (node, s)
        assert s["model_mape"] < 20.0, (node, s)
    h = comm_fit.lookup(fits["h100_dgx"], "all_reduce", 8)
    assert 250e9 < h.params.bandwidth < 450e9


@need_data
def test_shipped_calibration_matches_a_refit(fits):
    shipped = json.loads(comm_fit.CALIBRATION_FILE.read_text())
    for node, fs in fits.items():
        cal = comm_fit.calibration(node)
        assert cal, node
        for f in fs:
            c = cal[(f.collective, f.world, f.devices_per_node)]
            assert c.params.bandwidth == pytest.approx(f.params.bandwidth, rel=1e-6)
    # the shipped (downsampled) tables against every raw measurement: within the data's own noise
    for node in fits:
        errs = []
        for coll in comm_fit.COLLECTIVES:
            path = NETWORK / node / f"{coll}.csv"
            if not path.is_file():
                continue
            for (world, dpn), (nbytes, secs) in comm_fit.read_collective_csv(path).items():
                c = comm_fit.calibration(node)[(coll, world, dpn)]
                errs.append(np.mean(np.abs(c.curve.eval_array(nbytes) - secs) / secs) * 100)
        assert np.mean(errs) < 6.0, (node, errs)
    assert shipped["aliases"]["dgx_h100"] == "h100_dgx"


def test_calibration_lookup_by_node_name():
    assert comm_fit.calibrated_params("dgx_a100", "all_reduce", 8) is not None
    assert comm_fit.calibrated_params("dgx_h200", "all_reduce", 4) is not None  # same NVLink4 fabric as H100
    assert comm_fit.calibrated_params("pcie_8", "all_reduce", 2) is None


def test_bad_files(tmp_path):
    with pytest.raises(VidurError, match="neither all_reduce.csv nor send_recv.csv"):
        comm_fit.fit_network(tmp_path)
    (tmp_path / "all_reduce.csv").write_text("a,b\n1,2\n")
    with pytest.raises(VidurError, match="not a Vidur collective profile"):
        comm_fit.fit_network(tmp_path)
