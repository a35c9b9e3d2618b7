"""The profile store: measured operator times with their provenance.

A profile lives in ``<root>/<device>/<model id>/`` (the model id is a
Hugging Face id, so it nests one more directory: ``profiles/h100/meta-llama/
Meta-Llama-3-8B/``) and holds:

- ``metadata.json``: what was measured, where, how and by which command
  (device name and memory, driver, torch and CUDA versions, dtype, date,
  timing method, command line, the model's shape) and, per tensor-parallel
  shard, the data file, its row count and whether it is complete;
- ``tp<t>.csv``: one row per measurement of shard ``t`` with columns
  :data:`COLUMNS`. Token-level operators use ``num_tokens``; attention
  rows use ``num_tokens`` (query tokens per request), ``batch`` (requests)
  and ``context`` (tokens already cached per request); CPU-overhead rows use
  ``batch`` (sequences in the iteration).

Roots are searched in order (:func:`profile_roots`): every directory in
``$VIDUR_PROFILE_PATH`` (``os.pathsep``-separated), the user's profile
directory (:func:`user_profiles_dir`, where ``vidur profile`` and ``vidur
import-vidur`` write by default), then the profiles shipped inside the
package (``vidur/data/profiles``). The working directory is never searched,
so a scenario prices the same from any directory. Nothing here needs more
than the standard library and numpy.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from vidur.errors import VidurError

FORMAT = "vidur-profile/1"
PROFILE_PATH_ENV = "VIDUR_PROFILE_PATH"
METADATA = "metadata.json"
FIT_FILE = "fitted.json"

#: columns of a shard's ``tp<t>.csv``
COLUMNS = ("op", "num_tokens", "batch", "context", "median_ms", "mean_ms", "min_ms", "std_ms", "repeats")

#: token-level operators of one decoder layer (time depends on the token count only)
LAYER_TOKEN_OPS = (
    "input_norm",
    "qkv_proj",
    "rope",
    "kv_cache_write",
    "o_proj",
    "post_norm",
    "gate_up_proj",
    "act",
    "down_proj",
    "add",
    "router",
    "experts",
)
#: the dense MLP's operators, replaced in a mixture of experts by ``router`` (more than one expert)
#: and ``experts`` (gather, the routed experts' MLPs, weighted scatter back)
DENSE_MLP_OPS = ("gate_up_proj", "act", "down_proj")
MOE_OPS = ("router", "experts")


def model_layer_ops(model) -> tuple[str, ...]:
    """The token-level operators of ``model``'s decoder layer (:data:`LAYER_TOKEN_OPS` that apply)."""
    skip = set()
    if model.parallel_attn_mlp:
        skip.add("post_norm")
    if model.is_moe:
        skip.update(DENSE_MLP_OPS)
        if model.num_experts == 1:
            skip.add("router")
    else:
        skip.update(MOE_OPS)
    return tuple(op for op in LAYER_TOKEN_OPS if op not in skip)
#: token-level operators outside the layers (embedding; final norm, LM head, sampling per sequence)
EDGE_OPS = ("embed", "final_norm", "lm_head", "sample")
#: attention operators (sequence-level)
ATTENTION_OPS = ("attn_prefill", "attn_decode")
#: host-side per-iteration overheads: input preparation and sampling (per sequence count),
#: eager launch cost of one layer and the cost of replaying a captured CUDA graph
CPU_OPS = ("cpu_prepare", "cpu_sample", "cpu_launch_layer", "cpu_graph_replay")
KNOWN_OPS = frozenset(LAYER_TOKEN_OPS + EDGE_OPS + ATTENTION_OPS + CPU_OPS)

#: Vidur's operator names (its ``mlp.csv``, and the roofline's) -> ours
MLP_OPS = {
    "emb": "embed",
    "input_layernorm": "input_norm",
    "attn_pre_proj": "qkv_proj",
    "attn_rope": "rope",
    "attn_post_proj": "o_proj",
    "post_attention_layernorm": "post_norm",
    "mlp_up_proj": "gate_up_proj",
    "mlp_act": "act",
    "mlp_down_proj": "down_proj",
    "add": "add",
}


def shard_file(tp: int) -> str:
    return f"tp{int(tp)}.csv"


#: the profiles shipped with vidur (package data)
SHIPPED_PROFILES = Path(__file__).resolve().parent.parent / "data" / "profiles"


def user_profiles_dir() -> Path:
    """Where new profiles go by default: the first directory of ``$VIDUR_PROFILE_PATH``, else
    ``$XDG_DATA_HOME/vidur/profiles`` (``~/.local/share/vidur/profiles``)."""
    env = [p for p in os.environ.get(PROFILE_PATH_ENV, "").split(os.pathsep) if p.strip()]
    if env:
        return Path(env[0]).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data).expanduser() / "vidur" / "profiles"


def profile_roots() -> list[Path]:
    """Directories searched for profiles, in order: ``$VIDUR_PROFILE_PATH``, the user's profile
    directory, then the profiles shipped with vidur. Independent of the working directory."""
    roots = [Path(p).expanduser() for p in os.environ.get(PROFILE_PATH_ENV, "").split(os.pathsep) if p.strip()]
    roots += [user_profiles_dir(), SHIPPED_PROFILES]
    out: list[Path] = []
    for r in roots:
        if r.is_dir() and r.resolve() not in [o.resolve() for o in out]:
            out.append(r)
    return out


def root_label(path: str | Path) -> str:
    """Which root a profile directory lies under, in words (``shipped with vidur``,
    ``$VIDUR_PROFILE_PATH``, ``user profiles``), or ``given path``."""
    p = Path(path).expanduser().resolve()
    env = [Path(x).expanduser().resolve() for x in os.environ.get(PROFILE_PATH_ENV, "").split(os.pathsep) if x.strip()]
    for root, label in [(r, f"${PROFILE_PATH_ENV}") for r in env] + [
        (user_profiles_dir().resolve(), "user profiles"),
        (SHIPPED_PROFILES.resolve(), "shipped with vidur"),
    ]:
        if p == root or root in p.parents:
            return label
    return "given path"


def _name(x: Any) -> str:
    return x if isinstance(x, str) else getattr(x, "name", str(x))


def profile_dir(root: str | Path, device: Any, model: Any) -> Path:
    """``<root>/<device>/<model id>``."""
    return Path(root) / _name(device) / _name(model)


def read_metadata(path: str | Path) -> dict:
    """The parsed ``metadata.json`` of a profile directory (clear errors when missing or broken)."""
    p = Path(path)
    meta_path = p / METADATA
    if not p.is_dir():
        raise VidurError(f"profile directory {p} does not exist")
    if not meta_path.is_file():
        raise VidurError(f"{p} is not a profile: it has no {METADATA}; create one with `vidur profile`")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise VidurError(f"cannot read {meta_path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise VidurError(
            f"profile metadata {meta_path} is corrupt or truncated (line {exc.lineno}: {exc.msg}); "
            f"re-run `vidur profile` to regenerate it"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("shards"), dict):
        raise VidurError(f"{meta_path} is not a {FORMAT} profile metadata file")
    return meta


def write_metadata(path: str | Path, meta: dict) -> None:
    """Write ``metadata.json`` atomically (a crash never leaves half a file)."""
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    tmp = p / (METADATA + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, p / METADATA)


def complete_shards(meta: dict) -> list[int]:
    return sorted(int(k) for k, v in meta.get("shards", {}).items() if v.get("complete"))


def find_profile(device: Any, model: Any, tp: int) -> Path | None:
    """The first profile directory for (device, model) holding a complete shard ``tp``, or None.

    ``device`` and ``model`` are names or specs (their ``name`` is used).
    A directory with broken metadata is skipped here; loading it explicitly
    reports the problem.
    """
    for root in profile_roots():
        d = profile_dir(root, device, model)
        if not (d / METADATA).is_file():
            continue
        try:
            meta = read_metadata(d)
        except VidurError:
            continue
        if int(tp) in complete_shards(meta):
            return d
    return None


def pricing_gap(meta: dict, tp: int) -> str | None:
    """What shard ``tp`` of a profile lacks to price a whole batch (token-level operators and both
    attention kinds), or None. Read from the metadata: a shard that lists its ``ops`` (imports do)
    is checked against them; a profiler shard marked complete has them all."""
    info = meta.get("shards", {}).get(str(int(tp)))
    if not info or not info.get("complete"):
        return f"no complete tp={int(tp)} shard"
    ops = info.get("ops")
    if ops is None:
        return None
    missing = [op for op in ATTENTION_OPS if op not in ops]
    if missing:
        return f"no attention measurements ({', '.join(missing)} missing; import an attention.csv too)"
    if not any(op in ops for op in LAYER_TOKEN_OPS):
        return "no token-level operator measurements"
    return None


def prices_engine(path: str | Path, engine: str | None) -> bool:
    """Whether the profile at ``path`` may price a run meant for ``engine``'s kernels (a policy's
    ``models_engine``): always when ``engine`` is None, else only when the profile's metadata
    says it timed that engine (``engine:``); vidur's profiler times the reference executor's
    PyTorch operators and imported Vidur profiles Sarathi-Serve's, so neither does."""
    if not engine:
        return True
    measured = read_metadata(path).get("engine")
    return bool(measured) and str(measured) == engine


def find_pricing_profile(device: Any, model: Any, tp: int) -> tuple[Path | None, list[str]]:
    """The first profile of (device, model) whose shard ``tp`` can price a batch, and why each
    profile passed over could not (``"<path>: no attention measurements ..."``)."""
    skipped: list[str] = []
    for root in profile_roots():
        d = profile_dir(root, device, model)
        if not (d / METADATA).is_file():
            continue
        try:
            meta = read_metadata(d)
        except VidurError as exc:
            skipped.append(f"{d}: {exc}")
            continue
        gap = pricing_gap(meta, tp)
        if gap is None:
            return d, skipped
        skipped.append(f"{d}: {gap}")
    return None, skipped


def list_profiles() -> list[dict]:
    """Every profile found under the roots: ``{"path", "device", "model", "tp": [...]}``."""
    out = []
    for root in profile_roots():
        for meta_path in sorted(Path(root).glob(f"*/*/*/{METADATA}")) + sorted(Path(root).glob(f"*/*/{METADATA}")):
            try:
                meta = read_metadata(meta_path.parent)
            except VidurError:
                continue
            out.append(
                {"path": str(meta_path.parent), "device": meta.get("device"), "model": meta.get("model"), "tp": complete_shards(meta)}
            )
    return out


# --- shard data -----------------------------------------------------------


class ShardData:
    """The measurements of one tensor-parallel shard, as numpy columns.

    ``op`` is an array of operator names; the other columns are floats
    (``num_tokens``, ``batch``, ``context``, ``median_ms`` ...).
    """

    def __init__(self, tp: int, columns: dict[str, np.ndarray]):
        self.tp = tp
        self.columns = columns

    def __len__(self) -> int:
        return len(self.columns["op"])

    def ops(self) -> list[str]:
        return sorted(set(self.columns["op"].tolist()))

    def select(self, op: str) -> dict[str, np.ndarray]:
        """Rows of one operator (all columns), sorted by (batch, num_tokens, context)."""
        m = self.columns["op"] == op
        cols = {k: v[m] for k, v in self.columns.items()}
        order = np.lexsort((cols["context"], cols["num_tokens"], cols["batch"]))
        return {k: v[order] for k, v in cols.items()}


def parse_shard_csv(text: str, where: str, tp: int = 1) -> ShardData:
    """Parse a shard CSV; any malformed row is a :class:`VidurError` naming the line."""
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise VidurError(f"profile file {where} is empty; re-run `vidur profile` to regenerate it") from None
    if tuple(h.strip() for h in header) != COLUMNS:
        raise VidurError(f"profile file {where} has header {','.join(header)!r}; expected {','.join(COLUMNS)!r}")
    ops: list[str] = []
    nums: list[list[float]] = []
    for lineno, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) != len(COLUMNS):
            raise VidurError(
                f"profile file {where} is corrupt or truncated at line {lineno} "
                f"({len(row)} fields, expected {len(COLUMNS)}); re-run `vidur profile` to resume it"
            )
        try:
            vals = [float(x) for x in row[1:]]
        except ValueError:
            raise VidurError(
                f"profile file {where} is corrupt at line {lineno}: non-numeric value in {row!r}"
            ) from None
        if not all(math.isfinite(v) for v in vals) or vals[3] <= 0:
            raise VidurError(f"profile file {where} line {lineno}: times must be finite and positive, got {row!r}")
        op = row[0].strip()
        if op not in KNOWN_OPS:
            raise VidurError(f"profile file {where} line {lineno}: unknown operator {op!r}")
        ops.append(op)
        nums.append(vals)
    arr = np.array(nums, dtype=float).reshape(-1, len(COLUMNS) - 1)
    cols: dict[str, np.ndarray] = {"op": np.array(ops, dtype=object)}
    for i, name in enumerate(COLUMNS[1:]):
        cols[name] = arr[:, i]
    return ShardData(tp, cols)


class Profile:
    """A loaded, validated profile: metadata plus the data of its complete shards."""

    def __init__(
        self, path: Path, metadata: dict, shards: dict[int, ShardData], data_hash: str, shard_hashes: dict[int, str] | None = None
    ):
        self.path = path
        self.metadata = metadata
        self.shards = shards
        self.data_hash = data_hash  # of the loaded shards together
        self.shard_hashes = shard_hashes or {}  # per shard: the model shape and that shard's file

    @property
    def device(self) -> str:
        return str(self.metadata.get("device", "?"))

    @property
    def model(self) -> str:
        return str(self.metadata.get("model", "?"))

    @property
    def model_spec(self) -> dict:
        return dict(self.metadata.get("model_spec", {}))

    def describe(self) -> str:
        return f"{self.device}/{self.model} (tp {','.join(map(str, sorted(self.shards)))})"


#: model-shape fields a profile must agree on with the model it prices
SHAPE_FIELDS = (
    "hidden_size",
    "num_heads",
    "num_kv_heads",
    "head_dim",
    "intermediate_size",
    "vocab_size",
    "gated_mlp",
    "norm",
    "num_experts",
    "experts_per_token",
    "moe_intermediate_size",
)


def check_model_matches(profile: Profile, model: Any) -> None:
    """Raise unless ``profile`` was measured for ``model`` (same name, or at least the same shape)."""
    spec = profile.model_spec
    name = _name(model)
    mismatched = [f for f in SHAPE_FIELDS if f in spec and hasattr(model, f) and spec[f] != getattr(model, f)]
    if mismatched:
        f = mismatched[0]
        raise VidurError(
            f"profile {profile.path} was measured for {profile.model}, not {name} "
            f"({f}: {spec[f]} vs {getattr(model, f)}); profile {name} with `vidur profile --model {name}`"
        )
    if profile.model != name and not spec:
        raise VidurError(f"profile {profile.path} was measured for {profile.model}, not {name}")


def hash_bytes(chunks: list[bytes]) -> str:
    h = hashlib.sha256()
    for c in chunks:
        h.update(len(c).to_bytes(8, "little"))
        h.update(c)
    return h.hexdigest()[:20]


def load_profile(path: str | Path, tps: list[int] | None = None) -> Profile:
    """Load and validate a profile directory (all complete shards, or just ``tps``).

    Raises :class:`VidurError` with one line for a missing, corrupt or
    truncated file, or a requested shard that is absent or incomplete.
    """
    p = Path(path)
    meta = read_metadata(p)
    done = complete_shards(meta)
    wanted = done if tps is None else [int(t) for t in tps]
    shards: dict[int, ShardData] = {}
    spec_bytes = json.dumps(meta.get("model_spec", {}), sort_keys=True).encode()
    hashes: dict[int, str] = {}
    for t in wanted:
        info = meta["shards"].get(str(t))
        if info is None:
            have = ", ".join(map(str, sorted(int(k) for k in meta["shards"]))) or "none"
            raise VidurError(f"profile {p} has no tensor-parallel shard tp={t} (it has: {have}); profile it with `vidur profile --tp {t}`")
        if not info.get("complete"):
            raise VidurError(f"profile {p} shard tp={t} is incomplete (interrupted); re-run the same `vidur profile` command to resume it")
        f = p / info.get("file", shard_file(t))
        try:
            raw = f.read_bytes()
        except OSError as exc:
            raise VidurError(f"cannot read profile file {f}: {exc.strerror or exc}") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise VidurError(f"profile file {f} is corrupt (not UTF-8 text)") from None
        data = parse_shard_csv(text, str(f), t)
        expected = info.get("rows")
        if expected is not None and len(data) != int(expected):
            raise VidurError(
                f"profile file {f} is truncated or was edited: {len(data)} rows, metadata says {expected}; "
                f"re-run `vidur profile` to regenerate it"
            )
        shards[t] = data
        hashes[t] = hash_bytes([spec_bytes, str(t).encode(), raw])
    data_hash = hash_bytes([f"{t}:{h}".encode() for t, h in sorted(hashes.items())])
    return Profile(p, meta, shards, data_hash, hashes)


def write_shard_rows(path: str | Path, rows: list[tuple], *, append: bool = True) -> None:
    """Append measurement rows (tuples in :data:`COLUMNS` order) to a shard CSV, flushing to disk."""
    f = Path(path)
    new = not f.exists() or f.stat().st_size == 0 or not append
    with open(f, "a" if append else "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        if new:
            w.writerow(COLUMNS)
        for r in rows:
            w.writerow([r[0]] + [_fmt(x) for x in r[1:]])
        fh.flush()
        os.fsync(fh.fileno())


def _fmt(x: float) -> str:
    if isinstance(x, (int, np.integer)) or (isinstance(x, float) and x.is_integer() and abs(x) < 1e15):
        return str(int(x))
    return f"{float(x):.6g}"


def read_partial_rows(path: str | Path) -> list[tuple]:
    """Rows already written to a (possibly interrupted) shard CSV, dropping a torn last line.

    Used to resume profiling; the file is rewritten without the torn line.
    """
    f = Path(path)
    if not f.exists():
        return []
    text = f.read_text(encoding="utf-8", errors="replace")
    lines = text.splitlines()
    if not lines or tuple(lines[0].split(",")) != COLUMNS:
        return []
    good: list[tuple] = []
    for line in lines[1:]:
        parts = line.split(",")
        if len(parts) != len(COLUMNS):
            break
        try:
            vals = tuple(float(x) for x in parts[1:])
        except ValueError:
            break
        if parts[0] not in KNOWN_OPS:
            break
        good.append((parts[0],) + vals)
    if len(good) != len(lines) - 1 or not text.endswith("\n"):
        write_shard_rows(f, good, append=False)
    return good
