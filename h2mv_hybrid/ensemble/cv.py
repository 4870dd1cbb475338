"""``h2mv cv``: train the K members of the spatial-block cross-validation (paper §2.3.1).

Member k is the experiment config with ``data.member = k``, ``data.n_folds = K`` and its
own seeds (``seed_everything`` and ``data.seed`` offset by k); every member shares the
test fold. Each member is an ordinary ``h2mv fit`` (LightningCLI) run in its own
directory, ``<root>/member_<k>/``, with its checkpoints in ``checkpoints/``:

- a member with ``done.json`` is finished and skipped;
- a member with ``checkpoints/last.ckpt`` but no ``done.json`` was interrupted and
  resumes from that checkpoint (optimizer, early stopping and spin-up cache included);
- any other member starts from scratch.

``<root>/cv.json`` records the config, its checksum, the overrides and K; a second run
on the same root with a different config or K is refused, so one root never mixes two
ensembles. Members are independent, so processes (one per GPU, or a SLURM job array) can
train different ``--members`` of one root at once; see docs/ensembles.md.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from h2mv_hybrid.atomic import read_json, write_json, write_text
from h2mv_hybrid.ensemble import claims
from h2mv_hybrid.options import check_choice

PredictCells = Literal["test", "all", "none"]
EnsembleOf = Literal["all", "these"]
#: Overrides that would contradict the member set-up; ``h2mv cv`` owns them.
OWNED = ("--data.member", "--data.n_folds", "--trainer.default_root_dir", "--ckpt_path")
CHECKPOINT = "lightning.pytorch.callbacks.ModelCheckpoint"
PREDICTION_WRITER = "h2mv_hybrid.callbacks.prediction.ZarrPredictionWriter"


def _class_name(entry: Any) -> str:
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict):
        return str(entry.get("class_path", ""))
    return ""


def _is(entry: Any, class_path: str) -> bool:
    name = _class_name(entry)
    return name == class_path or (name and class_path.endswith("." + name))


def member_config(base: dict[str, Any], member: int, folds: int, member_dir: Path,
                  seed: int | None = None) -> dict[str, Any]:
    """The config of member ``member``: base config with the fold, seeds and directories set.

    With ``seed`` (an ensemble of seeds over one temporal split) the member trains with
    that seed and the config's split; otherwise it validates on fold ``member`` of
    ``folds``, with the config's seeds offset by ``member``. Loggers with a ``save_dir``
    and the ``ModelCheckpoint`` callback are pointed into the member's directory (a
    checkpoint callback saving ``last.ckpt`` is added if the config has none, since
    resuming needs it). A ``ZarrPredictionWriter`` is dropped: the ensemble writes one
    store for all members instead.
    """
    cfg = copy.deepcopy(base)
    data = cfg.setdefault("data", {}) or {}
    cfg["data"] = data
    if seed is not None:
        cfg["seed_everything"] = data["seed"] = seed
    else:
        given = cfg.get("seed_everything")
        base_seed = given if isinstance(given, int) and not isinstance(given, bool) else 0
        cfg["seed_everything"] = base_seed + member
        data["n_folds"], data["member"] = folds, member
        data["seed"] = int(data.get("seed", 0) or 0) + member
    trainer = cfg.setdefault("trainer", {}) or {}
    cfg["trainer"] = trainer
    trainer["default_root_dir"] = str(member_dir)
    loggers = trainer.get("logger")
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        if isinstance(logger, dict) and "save_dir" in (logger.get("init_args") or {}):
            logger["init_args"]["save_dir"] = str(member_dir)
    callbacks = [c for c in trainer.get("callbacks") or [] if not _is(c, PREDICTION_WRITER)]
    ckpt = next((c for c in callbacks if _is(c, CHECKPOINT)), None)
    if ckpt is None:
        ckpt = {"class_path": CHECKPOINT, "init_args": {"monitor": "val_loss", "mode": "min"}}
        callbacks.append(ckpt)
    if isinstance(ckpt, str):  # a bare class path: give it arguments
        callbacks[callbacks.index(ckpt)] = ckpt = {"class_path": CHECKPOINT, "init_args": {}}
    args = ckpt.setdefault("init_args", {}) or {}
    ckpt["init_args"] = args
    args["dirpath"] = str(member_dir / "checkpoints")
    args["save_last"] = True
    trainer["callbacks"] = callbacks
    return cfg


@dataclass
class MemberResult:
    """Outcome of one member in this call.

    ``action``: ``trained``, ``resumed``, ``skipped`` (finished earlier) or ``elsewhere``
    (being trained by another process, which holds its claim).
    """

    member: int
    action: str
    directory: Path
    seconds: float
    best_checkpoint: str


def _fingerprint(config_text: str, overrides: Sequence[str], folds: int,
                 seeds: Sequence[int] | None = None) -> str:
    h = hashlib.sha256(config_text.encode())
    h.update(json.dumps([list(overrides), folds, *([list(seeds)] if seeds else [])]).encode())
    return h.hexdigest()


def config_split(base: dict[str, Any], overrides: Sequence[str]) -> str:
    """The ``data.split`` of a config with its overrides (default ``spatial``)."""
    split = str((base.get("data") or {}).get("split", "spatial"))
    for i, arg in enumerate(overrides):
        if arg.startswith("--data.split="):
            split = arg.split("=", 1)[1]
        elif arg == "--data.split" and i + 1 < len(overrides):
            split = overrides[i + 1]
    return split


def _check_overrides(overrides: Sequence[str]) -> None:
    for arg in overrides:
        key = arg.split("=", 1)[0]
        if key in OWNED:
            raise ValueError(
                f"{key}: expected h2mv cv to set it (member, folds and directories are per "
                f"member), found it among the overrides; use --members, --folds or --root"
            )


def cross_validate(
    config: str | os.PathLike,
    folds: int = 10,
    members: Sequence[int] | None = None,
    root: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    predict: PredictCells = "test",
    ensemble: str | os.PathLike | None = None,
    device: str = "auto",
    ensemble_of: EnsembleOf = "all",
    seeds: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Train (or resume, or skip) the CV members, then write the ensemble prediction store.

    The ``h2mv cv`` command; its LightningCLI options (``--trainer.max_epochs=3``,
    ``--model.init_args.lr=0.01`` …) are the ``overrides`` of every member's fit.

    Args:
        config: the experiment config (``experiments/<name>.yaml``) every member starts from.
        folds: K, the number of validation folds and members.
        members: which members this call trains (default: all K); separate processes may
            train disjoint members of the same root.
        root: directory of the ensemble (default ``h2mv_outputs/cv/<config name>``).
        overrides: extra LightningCLI arguments for every member (``--trainer.max_epochs=3``).
        predict: after training, if every member is finished, write the ensemble store for
            the ``test`` cells, ``all`` modelled cells, or ``none``.
        ensemble: path of the ensemble store (default ``<root>/ensemble.zarr``).
        device: device of the ensemble prediction (``auto``: CUDA if available).
        ensemble_of: the store holds ``all`` K members (written once every member is
            finished, whichever process finishes last) or only ``these`` members of this
            call (a partial ensemble, when compute allows only some members).
        seeds: an ensemble of seeds over one temporal split (``data.split: temporal``):
            member k trains with seed ``seeds[k]`` on the same cells and periods; K is the
            number of seeds and ``folds`` is not used.

    Returns:
        ``root``, ``members`` (a :class:`MemberResult` per member of this call) and
        ``ensemble`` (the store's path, or None when it was not written).
    """
    config = Path(config)
    if not config.is_file():
        raise FileNotFoundError(f"config: expected an experiment YAML file, found nothing at "
                                f"{config}")
    text = config.read_text()
    base = yaml.safe_load(text) or {}
    overrides = list(overrides)
    seeds = None if seeds is None else _check_seeds(seeds, config_split(base, overrides))
    folds = len(seeds) if seeds is not None else folds
    if seeds is None and folds < 2:
        raise ValueError(f"folds: expected at least 2, found {folds}")
    check_choice("ensemble_of", ensemble_of, EnsembleOf)  # before any member trains
    members = list(range(folds)) if members is None else sorted(set(int(m) for m in members))
    bad = [m for m in members if not 0 <= m < folds]
    if bad:
        raise ValueError(f"members: expected 0 … {folds - 1} for {folds} folds, found {bad}")
    check_choice("predict", predict, PredictCells)
    _check_overrides(overrides)
    root = (Path(root) if root is not None else Path("h2mv_outputs/cv") / config.stem).resolve()
    _claim_root(root, config, text, overrides, folds, seeds)
    results = [train_member(base, k, folds, root, overrides, None if seeds is None else seeds[k])
               for k in members]

    out = _publish(root, folds, members, predict, ensemble, device, ensemble_of)
    lines = ["", f"cross-validation: {root}"]
    lines += [f"  member {m.member}: {m.action:<8} {m.seconds:7.1f} s  {m.best_checkpoint}"
              for m in results]
    if out is not None:
        lines.append(f"ensemble store: {out}")
    print("\n".join(lines))
    return {"root": root, "members": results, "ensemble": out}


def _publish(root: Path, folds: int, members: list[int], predict: str,
             ensemble: str | os.PathLike | None, device: str, ensemble_of: str) -> Path | None:
    """Write the ensemble store once its members are finished (on rank 0); its path."""
    from lightning.pytorch.utilities import rank_zero_only

    wanted = list(range(folds)) if ensemble_of == "all" else members
    waiting = [k for k in wanted if not (root / f"member_{k}" / "done.json").exists()]
    if rank_zero_only.rank != 0 or predict == "none":
        return None  # the other ranks of a multi-device fit leave the store to rank 0
    if waiting:
        print(f"ensemble store not written yet: members {waiting} are not finished")
        return None
    from h2mv_hybrid.ensemble.store import predict_ensemble

    with claims.claim(root / "ensemble.claim.json") as other:
        if other is not None:
            print(f"ensemble store: being written by {claims.describe(other)}; not written "
                  f"again here")
            return None
        return predict_ensemble(root, ensemble, cells=predict, device=device,
                                members=None if ensemble_of == "all" else members)


def _check_seeds(seeds: Sequence[int], split: str) -> list[int]:
    """The seeds of an ensemble over one temporal split, checked."""
    seeds = [int(s) for s in seeds]
    if split != "temporal":
        raise ValueError(f"seeds: expected a config with data.split temporal (an ensemble "
                         f"of seeds over one split), found split {split!r}; a spatial "
                         f"ensemble's members are its folds (--folds)")
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds: expected distinct seeds, found {seeds}")
    return seeds


def _claim_root(root: Path, config: Path, text: str, overrides: list[str], folds: int,
                seeds: list[int] | None) -> None:
    """Record this CV in ``root/cv.json``, or check that the root holds this CV."""
    manifest = {"config": str(config.resolve()), "config_text": text, "overrides": overrides,
                "folds": folds, "fingerprint": _fingerprint(text, overrides, folds, seeds)}
    if seeds is not None:
        manifest["seeds"] = seeds
    existing = root / "cv.json"
    if not existing.exists():
        write_json(existing, manifest)
        return
    old = read_json(existing)
    if old.get("fingerprint") != manifest["fingerprint"]:
        # name what differs: the same file and options can hold another config since
        edited = (old.get("config_text") != text and old.get("overrides") == overrides
                  and old.get("folds") == folds)
        raise ValueError(
            f"root: {root} holds a CV of {old.get('config')} with {old.get('folds')} folds "
            f"and overrides {old.get('overrides')}; found {config} with {folds} folds and "
            f"overrides {overrides}"
            + ("; the config's contents differ from the ensemble's" if edited else "")
            + ". Use another --root (one root holds one ensemble)"
        )


def train_member(base: dict[str, Any], k: int, folds: int, root: Path,
                 overrides: Sequence[str], seed: int | None = None) -> MemberResult:
    """Train member ``k`` (or resume it, or skip it when finished) in ``root/member_<k>``.

    ``seed``: the member of an ensemble of seeds (see :func:`member_config`).
    """
    mdir = root / f"member_{k}"
    done = mdir / "done.json"
    if done.exists():
        return _finished(k, mdir)
    last = mdir / "checkpoints" / "last.ckpt"
    if claims.secondary_rank():  # the other ranks of a distributed fit follow their rank 0
        if not claims.wait_for_rank_zero(mdir / claims.CLAIM, done):
            return MemberResult(k, "skipped", mdir, 0.0, "")
        return _train(base, k, folds, root, overrides, seed)
    with claims.claim(mdir / claims.CLAIM, heartbeat=last) as other:
        if other is not None:
            print(f"member {k}: being trained by {claims.describe(other)}; skipped here")
            return MemberResult(k, "elsewhere", mdir, 0.0, "")
        if done.exists():  # finished by another process since the first look
            return _finished(k, mdir)
        return _train(base, k, folds, root, overrides, seed)


def _finished(k: int, mdir: Path) -> MemberResult:
    info = read_json(mdir / "done.json")
    print(f"member {k}: finished earlier ({info['best_checkpoint']}); skipped")
    return MemberResult(k, "skipped", mdir, 0.0, info["best_checkpoint"])


def _train(base: dict[str, Any], k: int, folds: int, root: Path, overrides: Sequence[str],
           seed: int | None) -> MemberResult:
    from h2mv_hybrid.lightning_cli import run

    mdir = root / f"member_{k}"
    done = mdir / "done.json"
    last = mdir / "checkpoints" / "last.ckpt"
    cfg_path = mdir / "config.yaml"
    mdir.mkdir(parents=True, exist_ok=True)
    # atomic: under DDP every rank runs this loop and writes the same file
    write_text(cfg_path, yaml.safe_dump(member_config(base, k, folds, mdir, seed),
                                        sort_keys=False))
    args = ["fit", "--config", str(cfg_path), *overrides]
    action = "trained"
    if last.exists():
        args += ["--ckpt_path", str(last)]
        action = "resumed"
    what = f"resuming from {last}" if action == "resumed" else "training"
    print(f"member {k} of {folds}: {what} in {mdir}")
    t0 = time.perf_counter()
    # sys.argv stays the cv command on purpose: Lightning's DDP launcher starts the other
    # ranks with it, and they must walk the same members.
    cli = run(args)
    seconds = time.perf_counter() - t0
    trainer = cli.trainer
    if trainer.interrupted or trainer.state.status.value != "finished":
        raise RuntimeError(f"member {k}: fit ended as {trainer.state.status.value}; "
                           f"rerun h2mv cv to resume it from {last}")
    ckpt = trainer.checkpoint_callback
    best = (ckpt.best_model_path if ckpt is not None else "") or str(last)
    info = {
        "member": k, "folds": folds, "best_checkpoint": best, "last_checkpoint": str(last),
        "epochs": trainer.current_epoch, "seconds": seconds, "action": action,
        "world_size": trainer.world_size,
        "val": {key: float(v) for key, v in trainer.callback_metrics.items()
                if key.startswith("val_")},
    }
    if trainer.is_global_zero:
        write_json(done, info)
    return MemberResult(k, action, mdir, seconds, best)
