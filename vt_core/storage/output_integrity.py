"""Checking what the analysis derived from the runs: ``metrics.zarr``, the HMM files and
``analysis.json`` (:func:`check_derived`, for `vt validate`), and whether a current analysis can be
reused as it is (:func:`analysis_damage`, for `vt run` / `vt analyze`).

JSON files carry their own SHA-256 (:func:`vt_core.storage.location.read_json`), ``.npz`` files the CRC-32
of each member (zip), and metrics.zarr a CRC32C per chunk: a flipped bit anywhere is found.
"""

from __future__ import annotations

from vt_core.storage.layout import layout
from vt_core.storage.location import DamagedFileError, Location, load_npz, location, read_json, url, zarr_options


def metrics_problems(study: str | Location) -> list[str]:
    """Damage in ``metrics.zarr`` (a chunk missing or failing its checksum); empty if none."""
    return _metrics_problems(location(study))


def _metrics_problems(study: Location) -> list[str]:
    import zarr

    from vt_core.storage.run_integrity import chunk_problems

    path = layout(study).metrics
    if not path.exists():
        return []
    try:
        group = zarr.open_group(url(path), mode="r", zarr_format=3, **zarr_options(path))
        arrays = list(group.arrays())
    except Exception as err:  # noqa: BLE001 - every kind of damage is reported
        return [f"{path.name} cannot be opened ({type(err).__name__}: {str(err)[:120]})"]
    try:
        seeds = [int(s) for s in group["seed"][:]]
    except Exception:  # noqa: BLE001 - reported below as the seed array's own damage
        seeds = None
    out = []
    for name, arr in arrays:
        dim = (arr.metadata.dimension_names or ("row",))[0] if arr.shape else "row"
        out += [f"{path.name}: {p}" for p in chunk_problems(arr, name, seeds if dim == "seed" else None, dim)]
    return out


def _hmm_files(study: Location) -> list[Location]:
    files = layout(study)
    out = [files.hmm_split, files.selection, files.paths, files.hmm_input, files.model]
    fits = files.fit("x", "json").parent
    if fits.exists():
        out += sorted(fits.iterdir(), key=str)
    return out


def file_problem(path: Location) -> str | None:
    """Why a JSON or .npz file of the study cannot be trusted (None: it can)."""
    try:
        if path.name.endswith(".json"):
            read_json(path)
        elif path.name.endswith(".npz"):
            try:
                load_npz(path)
            except Exception as err:  # noqa: BLE001 - bad zip, CRC mismatch, truncated member
                raise DamagedFileError(f"{path} is damaged ({type(err).__name__}: {str(err)[:100]})") from None
    except DamagedFileError as err:
        return str(err)
    return None


def analysis_damage(study: str | Location) -> str | None:
    """Why the study's current analysis cannot be reused (a file is missing or damaged), or None."""
    files = layout(study)
    problems = metrics_problems(study)
    if problems:
        return problems[0]
    needed = [files.analysis, files.selection, files.paths, files.model, files.hmm_input, files.hmm_split]
    for path in needed:
        if not path.is_file():
            return f"{path.name} is missing"
        problem = file_problem(path)
        if problem:
            return problem
    return None


def check_derived(study: str | Location) -> list[str]:
    """Every damaged derived file (with what rebuilds it); files not made yet are not problems."""
    study = location(study)
    fix = f"`vt analyze {study}` recomputes it"
    out = [f"{p}; {fix}" for p in _metrics_problems(study)]
    for path in [*_hmm_files(study), layout(study).analysis]:
        if path.is_file():
            problem = file_problem(path)
            if problem:
                out.append(f"{problem}; {fix}")
    stale = layout(study).task_results
    if stale.exists():
        out.append(f"{stale} holds result files from an older vt; vt never reads them: delete the folder")
    return out
