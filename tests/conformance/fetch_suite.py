#!/usr/bin/env python3
"""Write ONNX's backend *node* test suite to disk for the conformance harness.

    tests/conformance/fetch_suite.py [--out DIR] [--force] [--python PY]

Runs under --python, else $PY, else .venv/bin/python when it exists, else
python3 (the script re-executes itself under that interpreter).

onnx 1.23.x no longer ships the node test data as files: the cases are built
in memory by `onnx.backend.test.loader.load_node_model_tests()`.  This script
writes them out in the standard on-disk layout

    DIR/test_<name>/model.onnx
    DIR/test_<name>/test_data_set_<k>/input_<j>.pb    (TensorProto, or
    DIR/test_<name>/test_data_set_<k>/output_<j>.pb    Sequence/OptionalProto)
    DIR/test_<name>/data.json   (only when the case's rtol/atol differ from
                                 ONNX's defaults 1e-3 / 1e-7)

exactly as `python -m onnx.backend.test.cmd_tools generate-data` would.  The
default DIR is `.cache/onnx-node-tests/<onnx version>/` in the repository
root.  Nothing is downloaded: the data comes from the installed onnx package,
which must be the pinned version (see scripts/python-env.sh) unless
--any-version is given.

Idempotent: a stamp file (DIR/.stamp) records the onnx version and the
number of cases; when it matches, the script exits at once.  The suite is
written to a temporary sibling directory and renamed into place, so an
interrupted run never leaves a half-written suite behind a valid stamp.
The last line on stdout is the suite directory.
"""

import argparse
import json
import os
import shutil
import sys
import time
import warnings

PINNED_ONNX = "1.23.2"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_RTOL, DEFAULT_ATOL = 1e-3, 1e-7
STAMP_NAME = ".stamp"
STAMP_FORMAT = 1  # bump when the on-disk layout written here changes


def resolve_python(explicit=None):
    """The python the harness runs under: --python, else $PY, else the
    project venv's .venv/bin/python if it exists, else python3."""
    py = explicit or os.environ.get("PY")
    if not py:
        venv = os.path.join(ROOT, ".venv", "bin", "python")
        py = venv if os.path.exists(venv) else (shutil.which("python3") or sys.executable)
    elif os.sep not in py:
        py = shutil.which(py) or py
    return os.path.abspath(py)


def ensure_python(explicit=None):
    """Re-exec the running script under resolve_python() unless it already
    runs there (so `python3 tests/conformance/run.py` uses the venv)."""
    py = resolve_python(explicit)
    if os.path.abspath(sys.executable) == py or os.environ.get("NNC_CONFORMANCE_REEXEC") == py:
        return
    if not os.path.exists(py):
        raise SystemExit(f"{os.path.basename(sys.argv[0])}: python {py} not found "
                         "(create the venv with scripts/python-env.sh, or set PY)")
    os.environ["NNC_CONFORMANCE_REEXEC"] = py
    os.execv(py, [py, os.path.abspath(sys.argv[0])] + sys.argv[1:])


def default_suite_dir(version=None):
    if version is None:
        import onnx

        version = onnx.__version__
    return os.path.join(ROOT, ".cache", "onnx-node-tests", version)


def _stamp_text(version, count):
    return json.dumps({"format": STAMP_FORMAT, "onnx": version, "cases": count}, sort_keys=True)


def _serialize(value, type_proto, name):
    """One data-set entry as the bytes of its .pb file (cmd_tools' rules)."""
    from onnx import TensorProto, numpy_helper

    if type_proto.HasField("map_type"):
        return numpy_helper.from_dict(value, name).SerializeToString()
    if type_proto.HasField("sequence_type"):
        return numpy_helper.from_list(value, name).SerializeToString()
    if type_proto.HasField("optional_type"):
        return numpy_helper.from_optional(value, name).SerializeToString()
    if isinstance(value, TensorProto):
        return value.SerializeToString()
    return numpy_helper.from_array(value, name).SerializeToString()


def write_case(case, case_dir):
    import onnx

    os.makedirs(case_dir)
    model = case.model
    onnx.save(model, os.path.join(case_dir, "model.onnx"))
    if case.rtol != DEFAULT_RTOL or case.atol != DEFAULT_ATOL:
        with open(os.path.join(case_dir, "data.json"), "w") as f:
            json.dump({"rtol": case.rtol, "atol": case.atol}, f, sort_keys=True)
    for k, (inputs, outputs) in enumerate(case.data_sets):
        ds = os.path.join(case_dir, f"test_data_set_{k}")
        os.makedirs(ds)
        for kind, values, infos in (("input", inputs, model.graph.input),
                                    ("output", outputs, model.graph.output)):
            for j, v in enumerate(values):
                info = infos[j]
                with open(os.path.join(ds, f"{kind}_{j}.pb"), "wb") as f:
                    f.write(_serialize(v, info.type, info.name))


def fetch(out=None, force=False, any_version=False, quiet=False):
    """Make sure the suite is on disk; return its directory."""
    import onnx

    version = onnx.__version__
    if version != PINNED_ONNX and not any_version:
        raise SystemExit(
            f"fetch_suite: onnx {version} is installed but the suite is pinned to "
            f"{PINNED_ONNX}; run with the project's venv (scripts/python-env.sh) "
            f"or pass --any-version")
    out = os.path.abspath(out or default_suite_dir(version))
    stamp = os.path.join(out, STAMP_NAME)
    if not force and os.path.isfile(stamp):
        with open(stamp) as f:
            have = f.read().strip()
        try:
            if json.loads(have).get("onnx") == version and json.loads(have).get("format") == STAMP_FORMAT:
                if not quiet:
                    print(f"fetch_suite: up to date ({have})", file=sys.stderr)
                return out
        except ValueError:
            pass

    t0 = time.time()
    from onnx.backend.test.loader import load_node_model_tests

    with warnings.catch_warnings():
        # Some case generators overflow on purpose (Cast tests etc.).
        warnings.simplefilter("ignore")
        import numpy as np

        with np.errstate(all="ignore"):
            cases = load_node_model_tests()
    names = [c.name for c in cases]
    if len(set(names)) != len(names):
        raise SystemExit("fetch_suite: duplicate test names in the loader's output")

    tmp = out + ".tmp-" + str(os.getpid())
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        for case in sorted(cases, key=lambda c: c.name):
            assert case.model is not None and case.data_sets is not None, case.name
            write_case(case, os.path.join(tmp, case.name))
        with open(os.path.join(tmp, STAMP_NAME), "w") as f:
            f.write(_stamp_text(version, len(cases)) + "\n")
        if os.path.exists(out):
            old = out + ".old-" + str(os.getpid())
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.makedirs(os.path.dirname(out), exist_ok=True)
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not quiet:
        print(f"fetch_suite: wrote {len(cases)} node tests of onnx {version} to {out} "
              f"in {time.time() - t0:.1f} s", file=sys.stderr)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="suite directory (default: .cache/onnx-node-tests/<onnx version>/)")
    ap.add_argument("--force", action="store_true", help="rewrite even if the stamp matches")
    ap.add_argument("--any-version", action="store_true",
                    help=f"allow an onnx other than the pinned {PINNED_ONNX}")
    ap.add_argument("--python", help="python to run under (default: $PY, .venv/bin/python, python3)")
    args = ap.parse_args(argv)
    ensure_python(args.python)
    print(fetch(args.out, args.force, args.any_version))


if __name__ == "__main__":
    main()
