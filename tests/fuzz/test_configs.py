"""Malformed configs (issue 17, "Bad input never writes"): each is refused by `vt validate CONFIG`
and by `vt run CONFIG` with one ``error:`` line that names the field (or the file), no traceback,
at most 2,000 characters, before anything is written or any flow starts. A few valid edge configs
must be accepted by `vt validate`, so that these tests fail in both directions.

Every case starts from a valid tiny config (``tiny_dict``) and breaks one thing; cases are built
here, not read from disk."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .conftest import assert_clean, assert_refused, diff_snapshots, snapshot, tiny_dict, vt, write_toml

pytestmark = [pytest.mark.timeout(300), pytest.mark.minutes]

STEPS_PER_EPOCH = 256 // 32  # n_train / batch_size of tiny_dict
LAST_STEP = 12 * STEPS_PER_EPOCH  # 12 epochs


@dataclass
class Case:
    id: str
    #: the config as a dict (written as TOML) or raw bytes; built in tmp; returns the path to pass
    make: Callable[[Path], Path]
    #: the output must name one of these (the field's dotted path or key, or the file)
    names: tuple[str, ...]
    #: the study directory the config points at (must not appear, or must stay byte-for-byte)
    out: Callable[[Path], Path] = field(default=lambda tmp: tmp / "study")
    skip: str | None = None
    #: a tighter wall-clock limit for this case, if any
    wall_clock: float | None = None


def _set(d: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for p in parents:
        d = d.setdefault(p, {})
    if value is _DELETE:
        d.pop(last, None)
    else:
        d[last] = value


_DELETE = object()


def _names_for(dotted: str) -> tuple[str, ...]:
    key = dotted.rsplit(".", 1)[-1]
    return (dotted,) if len(key) < 2 else (dotted, key)


def dict_case(id_: str, mutate: Callable[[dict, Path], None], names: tuple[str, ...], **kw) -> Case:
    def make(tmp: Path) -> Path:
        d = tiny_dict(tmp / "study")
        mutate(d, tmp)
        return write_toml(d, tmp / "cfg.toml")

    return Case(id_, make, names, **kw)


def set_case(dotted: str, value, id_: str | None = None, names: tuple[str, ...] | None = None, **kw) -> Case:
    label = "<deleted>" if value is _DELETE else _label(value)
    return dict_case(id_ or f"{dotted}={label}", lambda d, tmp: _set(d, dotted, value),
                     names or _names_for(dotted), **kw)


def multi_case(id_: str, changes: dict, names: tuple[str, ...], **kw) -> Case:
    def mutate(d, tmp):
        for k, v in changes.items():
            _set(d, k, v)

    return dict_case(id_, mutate, names, **kw)


def _label(v) -> str:
    if isinstance(v, str):
        return repr(v)[:30]
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 10**6:
        return f"2**{v.bit_length() - 1}" if v & (v - 1) == 0 else f"{v:.6g}" if v % 10 == 0 else str(v)
    return json.dumps(v, default=str)[:30] if not isinstance(v, float) or v == v else "nan"


def raw_case(id_: str, data: bytes) -> Case:
    def make(tmp: Path) -> Path:
        p = tmp / "cfg.toml"
        p.write_bytes(data)
        return p

    return Case(id_, make, ("cfg.toml",))


# --- the corpus ------------------------------------------------------------------------------------

INT_FIELDS = ["training.epochs", "training.batch_size", "training.warmup_steps", "data.n_bits", "data.k",
              "data.n_train", "data.n_test", "hooks.probe_size", "hmm.max_states", "hmm.restarts", "hmm.bootstrap",
              "hmm.cv_folds", "hmm.n_iter", "hmm.seed", "checkpoints.every_epochs", "hmm.pca_components"]
FLOAT_FIELDS = ["optimizer.lr", "optimizer.weight_decay", "optimizer.momentum", "training.grad_clip",
                "training.min_lr_ratio", "hmm.tol", "hmm.holdout_fraction", "hmm.convergence_threshold",
                "metrics.dormant_threshold"]


def _type_cases() -> list[Case]:
    cases = []
    for f in INT_FIELDS:  # valid values (3 is fine for each), of the wrong type
        cases += [set_case(f, True), set_case(f, "3")]
    for f in ["training.epochs", "training.batch_size", "data.n_train", "hooks.probe_size", "hmm.max_states",
              "checkpoints.every_epochs"]:
        cases += [set_case(f, [3]), set_case(f, {"value": 3})]
    cases += [set_case("training.epochs", 12.5), set_case("training.epochs", 12.0),
              set_case("hmm.restarts", 2.0)]
    for f in FLOAT_FIELDS:  # 0.5 is in range for each
        cases += [set_case(f, True), set_case(f, "0.5"), set_case(f, float("nan")), set_case(f, float("inf"))]
    cases += [set_case("optimizer.lr", [0.1]), set_case("optimizer.lr", {"value": 0.1}),
              set_case("optimizer.momentum", [0.5]), set_case("optimizer.lr", float("-inf")),
              set_case("optimizer.weight_decay", float("-inf")), set_case("optimizer.lr", "1e-3")]
    for f, v in [("model.bias", "yes"), ("model.bias", 1), ("model.bias", "true"), ("hmm.extend", 1),
                 ("hmm.extend", "false")]:
        cases.append(set_case(f, v))
    for f, v in [("name", 5), ("output_dir", 5), ("output_dir", ["a", "b"]), ("model.activation", 1),
                 ("training.loss", True), ("hmm.covariance", ["diag"]), ("optimizer.name", 3),
                 ("hooks.capture", True), ("metrics.convention", {"a": 1}), ("training.device", 0)]:
        cases.append(set_case(f, v))
    # lists given as scalars, and scalars inside lists of the wrong type
    for f, v in [("seeds", "0,1"), ("seeds", [0, "1"]), ("seeds", [0.5]), ("seeds", [True, False]),
                 ("seeds", True), ("seeds", "3"), ("hooks.activations", "layers.1"), ("hooks.activations", [1]),
                 ("hooks.weights", "*"), ("metrics.names", "l2"), ("metrics.plugins", "mypkg"),
                 ("metrics.exclude", "layers.*"), ("model.hidden", 32), ("model.hidden", [True]),
                 ("model.hidden", ["32"]), ("checkpoints.steps", ["0", "8"]), ("optimizer.betas", ["a", "b"]),
                 ("optimizer.betas", "0.9,0.999"), ("hmm.features", "l2")]:
        cases.append(set_case(f, v, names=("checkpoints.steps", "steps") if f == "checkpoints.steps" else None))
    return cases


def _steps_case(steps, id_):
    return multi_case(id_, {"checkpoints.every_epochs": _DELETE, "checkpoints.steps": steps},
                      ("checkpoints.steps", "steps"))


def _range_cases() -> list[Case]:
    s = set_case
    cases = [
        s("training.epochs", 0), s("training.epochs", -1), s("training.epochs", 2**63 - 1),
        s("training.epochs", 2**63), s("training.epochs", 10**8), s("training.epochs", 2**64 + 1),
        s("training.batch_size", 0), s("training.batch_size", -32),
        s("optimizer.lr", 0.0), s("optimizer.lr", -0.1), s("optimizer.lr", 1e308 * 10, id_="optimizer.lr=1e309"),
        s("optimizer.weight_decay", -0.01), s("optimizer.momentum", 1.0), s("optimizer.momentum", 1.5),
        s("optimizer.momentum", -0.1),
        multi_case("adam-betas=[1.5,2]", {"optimizer.name": "adam", "optimizer.betas": [1.5, 2.0]},
                   ("optimizer.betas", "betas")),
        multi_case("adam-betas=[0.9]", {"optimizer.name": "adam", "optimizer.betas": [0.9]},
                   ("optimizer.betas", "betas")),
        multi_case("adam-betas=3-values", {"optimizer.name": "adam", "optimizer.betas": [0.9, 0.999, 0.5]},
                   ("optimizer.betas", "betas")),
        multi_case("adam-betas=[-0.1,0.9]", {"optimizer.name": "adam", "optimizer.betas": [-0.1, 0.9]},
                   ("optimizer.betas", "betas")),
        multi_case("adamw-betas=[nan,0.9]", {"optimizer.name": "adamw", "optimizer.betas": [float("nan"), 0.9]},
                   ("optimizer.betas", "betas")),
        multi_case("adam-betas=[0.9,1.0]", {"optimizer.name": "adam", "optimizer.betas": [0.9, 1.0]},
                   ("optimizer.betas", "betas")),
        multi_case("adam-betas=[inf,0.9]", {"optimizer.name": "adam", "optimizer.betas": [float("inf"), 0.9]},
                   ("optimizer.betas", "betas")),
        s("training.grad_clip", 0.0), s("training.grad_clip", -1.0), s("training.min_lr_ratio", 1.5),
        s("training.warmup_steps", -1),
        multi_case("warmup_steps-past-the-end", {"training.lr_schedule": "warmup_cosine",
                                                  "training.warmup_steps": 10**6},
                   ("training.warmup_steps", "warmup_steps")),
        s("data.n_bits", 0), s("data.k", 0), s("data.k", 9, id_="data.k>n_bits", names=("data.k", "data.n_bits", "n_bits")), s("data.n_train", 0),
        s("data.n_test", -1), s("data.seed", -1),
        s("hooks.probe_size", 0), s("hooks.probe_size", 65, id_="probe_size>n_test(65)"),
        s("hooks.probe_size", 1000, id_="probe_size>n_test(1000)"),
        s("hmm.max_states", 0), s("hmm.max_states", 1000), s("hmm.max_states", 65), s("hmm.restarts", 0),
        s("hmm.restarts", 101), s("hmm.bootstrap", -1), s("hmm.bootstrap", 10**6), s("hmm.cv_folds", -1),
        s("hmm.holdout_fraction", 1.0), s("hmm.holdout_fraction", -0.1), s("hmm.tol", 0.0), s("hmm.n_iter", 0),
        s("hmm.pca_components", 0), s("hmm.pca_components", 1000),
        s("hmm.pca_components", 15, id_="hmm.pca_components=15>14-features"),
        s("hmm.convergence_threshold", 0.0), s("hmm.convergence_threshold", 1.5), s("hmm.seed", -1),
        s("metrics.dormant_threshold", -1.0),
        s("hmm.covariance", "bogus"), s("hmm.standardize", "none"), s("optimizer.name", "rmsprop"),
        s("training.loss", "l1"), s("training.lr_schedule", "step"), s("training.precision", "fp64"),
        s("training.compile", "yes"), s("hooks.capture", "all"), s("metrics.convention", "paper"),
        s("model.activation", "swish"), s("model.norm", "group"),
        s("training.device", "tpu"), s("training.device", "cuda:"), s("training.device", " cpu"),
        s("training.seed_group_size", 0), s("training.seed_group_size", -1), s("training.seed_group_size", "many"),
        s("training.seed_group_size", True), s("training.seed_group_size", 1.5),
        # checkpoint schedules
        s("checkpoints.every_epochs", 0), s("checkpoints.every_epochs", -1),
        multi_case("every_steps=0", {"checkpoints.every_epochs": _DELETE, "checkpoints.every_steps": 0},
                   ("checkpoints.every_steps", "every_steps")),
        multi_case("log_spaced=1", {"checkpoints.every_epochs": _DELETE, "checkpoints.log_spaced": 1},
                   ("checkpoints.log_spaced", "log_spaced")),
        _steps_case([0, LAST_STEP + 1], f"steps=[0,{LAST_STEP + 1}]-past-the-end"),
        _steps_case([0, 10**12], "steps=[0,1e12]-past-the-end"),
        _steps_case([5, 3], "steps-decreasing"), _steps_case([-1, 5], "steps-negative"),
        _steps_case([], "steps-empty"), _steps_case([0, 0, 5], "steps-repeated"),
        multi_case("two-schedules", {"checkpoints.every_steps": 4}, ("checkpoints", "every_steps", "every_epochs")),
        multi_case("no-schedule", {"checkpoints.every_epochs": _DELETE}, ("checkpoints",)),
        # seeds
        s("seeds", 0), s("seeds", -3), s("seeds", []), s("seeds", [0, 0], id_="seeds-duplicate"),
        s("seeds", [-1]), s("seeds", [2**63]), s("seeds", [0, 1, 1], id_="seeds-duplicate-2"),
        # names
        s("name", ""), s("name", "../evil"), s("name", "a b"), s("name", "a/b"), s("output_dir", ""),
        s("data.name", "imagenet"),
        s("model.hidden", []), s("model.hidden", [0]), s("model.hidden", [-1]), s("model.name", "vgg"),
    ]
    return cases


def _semantic_cases() -> list[Case]:
    """Values that parse but would fail later: hookpoints, features, devices, code, consistency."""
    s = set_case
    cases = [
        s("hooks.activations", ["layer.1"], names=("hooks.activations", "activations", "layer.1")),
        s("hooks.activations", ["nope*"], names=("hooks.activations", "activations", "nope*")),
        s("hooks.activations", ["layers.1", "layers.7"], id_="hooks.activations-one-missing",
          names=("hooks.activations", "activations", "layers.7")),
        s("hooks.weights", ["nomatch*"], names=("hooks.weights", "weights", "nomatch*")),
        s("hmm.features", ["bogus"], names=("hmm.features", "features", "bogus")),
        s("hmm.features", ["l2@layers.9.weight"], names=("hmm.features", "features", "l2@layers.9.weight")),
        s("hmm.features", ["l2@"], names=("hmm.features", "features")),
        s("hmm.features", ["@layers.0.weight"], names=("hmm.features", "features")),
        s("hmm.features", ["l2@layers.0.weight@max"], names=("hmm.features", "features")),
        s("metrics.names", [], names=("metrics.names", "names")),
        s("metrics.names", ["bogus"], names=("metrics.names", "names", "bogus")),
        s("metrics.names", ["l2", "l2"], names=("metrics.names", "names")),
        s("metrics.plugins", ["no_such_module_vt_fuzz"], names=("metrics.plugins", "plugins", "no_such_module_vt_fuzz")),
        s("metrics.plugins", ["os.path.no_such_vt_fuzz"], names=("metrics.plugins", "plugins")),
        s("model", {"factory": "no_such_module_vt_fuzz:make"}, id_="model.factory-missing-module",
          names=("model.factory", "factory")),
        s("model", {"factory": "os:getcwd"}, id_="model.factory=os:getcwd-not-a-model", names=("model.factory", "factory")),
        s("model", {"factory": "os:system"}, id_="model.factory=os:system", names=("model.factory", "factory")),
        s("model", {"factory": "json:loads"}, id_="model.factory=json:loads", names=("model.factory", "factory")),
        s("model", {"factory": "os:no_such_attr_vt_fuzz"}, id_="model.factory-missing-attr",
          names=("model.factory", "factory")),
        s("model", {"factory": "../evil:make"}, id_="model.factory-path", names=("model.factory", "factory")),
        s("model", {"name": "transformer"}, id_="transformer-on-sparse-parity", names=("model.name", "model", "data.name")),
        s("model", {"name": "resnet"}, id_="resnet-on-sparse-parity", names=("model.name", "model", "data.name")),
        s("data", {"name": "digits"}, id_="hinge-on-digits", names=("training.loss", "loss")),
        multi_case("mnist-missing-root", {"data": {"name": "mnist", "root": "/nonexistent/vt-fuzz"},
                                          "training.loss": "cross_entropy"},
                   ("data.root", "root", "/nonexistent/vt-fuzz")),
    ]
    try:
        import torch

        cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    except Exception:  # noqa: BLE001
        cuda = mps = False
    for dev in ("cuda", "cuda:0", "cuda:7"):
        cases.append(s("training.device", dev, names=("training.device", "device"),
                       skip="a CUDA device is present" if cuda else None))
    cases.append(s("training.device", "mps", names=("training.device", "device"),
                   skip="an MPS device is present" if mps else None))
    return cases


def _structure_cases() -> list[Case]:
    s = set_case
    cases = [
        s("lerning_rate", 0.1, names=("lerning_rate",)),
        s("optimizer.lerning_rate", 0.1, names=("optimizer.lerning_rate", "lerning_rate")),
        multi_case("training.epoch-typo", {"training.epochs": _DELETE, "training.epoch": 12},
                   ("training.epoch", "epoch", "training.epochs", "epochs")),
        s("extra", {"a": 1}, id_="unknown-section", names=("extra",)),
        s("hmm.max_state", 3, names=("hmm.max_state", "max_state")),
    ]
    for dotted in ("training", "training.epochs", "model", "data", "seeds", "output_dir", "name", "checkpoints"):
        cases.append(s(dotted, _DELETE, id_=f"missing-{dotted}"))

    def huge_unknown(tmp: Path) -> Path:
        p = tmp / "cfg.toml"
        d = tiny_dict(tmp / "study")
        body = "".join(f"junk_key_{i:07d} = {i}\n" for i in range(520_000))  # ~ 10 MB of unknown keys
        p.write_text(body + "\n".join(f"{k} = {_toml(v)}" for k, v in d.items()) + "\n")
        assert p.stat().st_size > 10 * 2**20 * 0.95
        return p

    cases.append(Case("10MB-of-unknown-keys", huge_unknown, ("junk_key_0000000", "unknown"), wall_clock=15.0))

    def huge_value(tmp: Path) -> Path:
        d = tiny_dict(tmp / "study")
        d["name"] = "x" * 5_000_000 + "/"  # not a valid name: the error must not echo all of it
        return write_toml(d, tmp / "cfg.toml")

    cases.append(Case("name-of-5MB-invalid", huge_value, ("name",), wall_clock=15.0))
    return cases


def _toml(v) -> str:
    from .conftest import toml_value

    return toml_value(v)


def _file_cases() -> list[Case]:
    cases = [
        raw_case("invalid-toml", b"name = = 'x'\n"),
        raw_case("empty-file", b""),
        raw_case("binary-file", bytes(range(256)) * 64 + b"\x00\x00\xff\xfe"),
        raw_case("invalid-utf8", b'name = "tiny\xff\xfe"\n'),
        raw_case("duplicate-key", b"name = 'a'\nname = 'b'\n"),
        raw_case("toml-array-of-tables-at-top", b"[[seeds]]\nx = 1\n"),
    ]

    def missing(tmp: Path) -> Path:
        return tmp / "cfg.toml"

    def directory(tmp: Path) -> Path:
        (tmp / "cfg.toml").mkdir()
        return tmp / "cfg.toml"

    def nonempty_directory(tmp: Path) -> Path:
        (tmp / "cfg.toml").mkdir()
        (tmp / "cfg.toml" / "note.txt").write_text("not a config")
        return tmp / "cfg.toml"

    def symlink_loop(tmp: Path) -> Path:
        os.symlink(tmp / "cfg.toml", tmp / "cfg.toml")
        return tmp / "cfg.toml"

    def dangling(tmp: Path) -> Path:
        os.symlink(tmp / "nowhere.toml", tmp / "cfg.toml")
        return tmp / "cfg.toml"

    cases += [Case("missing-file", missing, ("cfg.toml",)), Case("a-directory", directory, ("cfg.toml",)),
              Case("a-nonempty-directory", nonempty_directory, ("cfg.toml",)),
              Case("symlink-loop", symlink_loop, ("cfg.toml",)), Case("dangling-symlink", dangling, ("cfg.toml",))]
    return cases


def _output_dir_cases() -> list[Case]:
    def with_out(id_: str, prepare: Callable[[Path], Path], names=("output_dir",), by_path: bool = False,
                 **kw) -> Case:
        """output_dir set to ``prepare(tmp)`` (which creates whatever should be there); with
        ``by_path``, the error may name it by its full path instead of ``output_dir``."""
        holder: dict[str, Path] = {}

        def make(tmp: Path) -> Path:
            out = prepare(tmp)
            holder["out"] = out
            if by_path:
                case.names = (*names, str(out))
            d = tiny_dict(out)
            return write_toml(d, tmp / "cfg.toml")

        case = Case(id_, make, (*names,), out=lambda tmp: holder["out"], **kw)
        return case

    def regular_file(tmp):
        (tmp / "taken").write_text("a regular file\n")
        return tmp / "taken"

    def under_file(tmp):
        (tmp / "taken").write_text("a regular file\n")
        return tmp / "taken" / "study"

    def nonempty(tmp):
        (tmp / "study").mkdir()
        (tmp / "study" / "thesis.tex").write_text("\\documentclass{article}\n")
        (tmp / "study" / "data").mkdir()
        (tmp / "study" / "data" / "x.bin").write_bytes(b"\x00\x01" * 100)
        return tmp / "study"

    def other_study(tmp):
        from vt_core.config.study_config import parse_config

        out = tmp / "study"
        other = parse_config(tiny_dict(out, optimizer={"lr": 0.3}, training={"epochs": 7}))
        (out / "runs").mkdir(parents=True)
        (out / "study.json").write_text(json.dumps({
            "config": other.model_dump(mode="json"), "training_hash": other.training_hash(),
            "versions": {"vt": "0.1.0"}, "created": "2024-01-01T00:00:00+00:00",
            "updated": "2024-01-01T00:00:00+00:00"}, indent=2))
        (out / "runs" / "note.txt").write_text("someone else's runs\n")
        return out

    def proc(tmp):
        return Path(f"/proc/vt-fuzz-{os.getpid()}/study")

    def read_only(tmp):
        (tmp / "ro").mkdir()
        os.chmod(tmp / "ro", 0o555)
        return tmp / "ro" / "study"

    root = os.geteuid() == 0
    return [
        with_out("output_dir-is-a-regular-file", regular_file, ("output_dir", "taken")),
        with_out("output_dir-under-a-regular-file", under_file, ("output_dir", "taken")),
        with_out("output_dir-nonempty-not-a-study", nonempty, ("output_dir",), by_path=True),
        with_out("output_dir-holds-another-study", other_study, ("output_dir",), by_path=True),
        with_out("output_dir-under-/proc", proc, ("output_dir", f"/proc/vt-fuzz-{os.getpid()}")),
        with_out("output_dir-/dev/null", lambda tmp: Path("/dev/null"), ("output_dir", "/dev/null")),
        with_out("output_dir-read-only-parent", read_only, ("output_dir", "ro"),
                 skip="running as root: permissions are not enforced" if root else None),
        set_case("output_dir", "nosuchproto-vt://bucket/x", names=("output_dir",)),
    ]


CASES = _type_cases() + _range_cases() + _semantic_cases() + _structure_cases() + _file_cases() + _output_dir_cases()
assert len({c.id for c in CASES}) == len(CASES), [c.id for c in CASES if [d.id for d in CASES].count(c.id) > 1]


def _param(c: Case):
    return pytest.param(c, id=c.id, marks=[pytest.mark.skip(reason=c.skip)] if c.skip else [])


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Each case runs in its own directory (relative paths land there)."""
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    for p in tmp_path.rglob("*"):  # undo chmod so that pytest can clean up
        if p.is_dir() and not p.is_symlink():
            os.chmod(p, 0o755)


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_malformed_config_is_refused_and_writes_nothing(case: Case, command: str, workdir: Path, no_flows):
    cfg = case.make(workdir)
    out = case.out(workdir)
    out_existed = out.exists() or out.is_symlink()
    before = snapshot(workdir)
    out_before = snapshot(out) if out_existed and out.is_dir() and not str(out).startswith("/proc") else None
    run = vt(command, cfg)
    after = snapshot(workdir)
    assert_refused(run, case.names, wall_clock=case.wall_clock or 30.0)
    if not out_existed:
        assert not (out.exists() or out.is_symlink()), f"a refused config created {out}:\n{run.describe()}"
    elif out_before is not None:
        assert snapshot(out) == out_before, f"a refused config changed {out}: {diff_snapshots(out_before, snapshot(out))}"
    assert after == before, f"a refused config wrote files: {diff_snapshots(before, after)}\n{run.describe()}"


# --- valid edges: `vt validate` must accept these ---------------------------------------------------

VALID = [
    set_case("seeds", 1, id_="seeds=1", names=()),
    set_case("seeds", [0], id_="seeds=[0]", names=()),
    set_case("seeds", [7, 3, 100], id_="seeds-unsorted", names=()),
    _steps_case([0, 5], "steps=[0,5]"),
    _steps_case([0, LAST_STEP], f"steps=[0,{LAST_STEP}]-the-last-step"),
    set_case("optimizer.lr", 1, id_="optimizer.lr=1-int-for-float", names=()),
    set_case("hooks.probe_size", 64, id_="probe_size=n_test", names=()),
    set_case("hmm.features", ["l2@layers.0.weight", "train_loss"], id_="features-one-layer", names=()),
    set_case("hmm.features", ["l2@max", "test_accuracy"], id_="features-max-aggregation", names=()),
    set_case("hmm.pca_components", 2, names=()),
    set_case("optimizer.momentum", 0.99, names=()),
    set_case("training.epochs", 1, names=()),
    set_case("training.device", "auto", names=()),
    multi_case("adam-betas=[0,0.5]", {"optimizer.name": "adam", "optimizer.betas": [0.0, 0.5]}, ()),
    multi_case("empty-output_dir-exists", {}, (), out=lambda tmp: tmp / "study"),
    set_case("output_dir", "rel/study", id_="output_dir-relative", names=()),
    set_case("output_dir", "studies/é ü spaces", id_="output_dir-unicode-spaces", names=()),
]


@pytest.mark.parametrize("case", [_param(c) for c in VALID])
def test_valid_edge_config_is_accepted_by_validate(case: Case, workdir: Path, no_flows):
    cfg = case.make(workdir)
    if case.id == "empty-output_dir-exists":
        (workdir / "study").mkdir()
    before = snapshot(workdir)
    run = vt("validate", cfg)
    assert_clean(run)
    assert run.exit_code == 0, f"a valid config was refused:\n{run.describe()}"
    assert not run.flow_started
    assert snapshot(workdir) == before, f"`vt validate` wrote files: {diff_snapshots(before, snapshot(workdir))}"


def test_corpus_size():
    """The issue asks for at least 100 malformed configs and a handful of valid edges."""
    assert len(CASES) >= 100 and len(VALID) >= 5


# --- sizes that cannot be allocated: refused before anything is built ------------------------------

HUGE = [
    set_case("model.hidden", [10**9], id_="model.hidden=[1e9]"),
    set_case("model.hidden", [4096] * 2000, id_="model.hidden=2000-layers-of-4096", names=("model.hidden", "hidden")),
    set_case("data.n_train", 10**11, id_="data.n_train=1e11"),
    set_case("data.n_bits", 10**9, id_="data.n_bits=1e9"),
]


@pytest.mark.parametrize("case", [_param(c) for c in HUGE])
def test_sizes_that_cannot_be_allocated_are_refused(case: Case, workdir: Path):
    """`vt validate` in a process limited to 4 GB of address space: a config whose model or data
    cannot exist on this machine is refused naming the field, not attempted (a MemoryError, or the
    kernel's OOM killer on a machine without the limit)."""
    import resource
    import subprocess
    import sys
    import time

    from .conftest import ROOT_DIR

    cfg = case.make(workdir)
    before = snapshot(workdir)

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (4 * 2**30, 4 * 2**30))

    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "validate", str(cfg)], cwd=ROOT_DIR,
                          capture_output=True, text=True, timeout=120, preexec_fn=limit)
    elapsed = time.perf_counter() - start
    out = proc.stdout + proc.stderr
    desc = f"`vt validate` -> exit {proc.returncode} in {elapsed:.1f} s\n--- output ---\n{out[-3000:]}"
    assert proc.returncode != 0, f"accepted:\n{desc}"
    assert "Traceback" not in out, f"traceback:\n{desc}"
    assert any(line.startswith("error:") for line in out.splitlines()), f"no 'error:' line:\n{desc}"
    assert len(out) <= 2000, f"{len(out)} characters:\n{desc}"
    from .conftest import mentions

    assert any(mentions(out, n) for n in case.names), f"names none of {case.names}:\n{desc}"
    assert snapshot(workdir) == before, "wrote files"
