"""Build benchmarks/corpus/stdlib_docs.jsonl: real English documents found on this machine, no downloads.

The documents are docstrings of the Python standard library (modules, classes, functions) as installed with the
interpreter, chosen deterministically to spread over lengths from one sentence to several pages. Rerun with
`python benchmarks/corpus/make_corpus.py` (benchmarks/extract.py runs it when the file is missing; the file itself is not committed).
"""
import importlib
import inspect
import json
import sys
import warnings
from pathlib import Path

MODULES = sorted(m for m in sys.stdlib_module_names if not m.startswith("_") and m not in {
    "antigravity", "this", "idlelib", "turtledemo", "tkinter", "turtle", "lib2to3", "ensurepip", "venv"})
N_DOCS = 240


def docstrings():
    seen = set()
    for name in MODULES:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mod = importlib.import_module(name)
        except Exception:
            continue
        objs = [(name, mod)] + [(f"{name}.{k}", v) for k, v in sorted(vars(mod).items())
                                if not k.startswith("_") and (inspect.isclass(v) or inspect.isfunction(v))
                                and getattr(v, "__module__", None) == name]
        for qual, obj in objs:
            doc = inspect.getdoc(obj)
            if not doc or len(doc) < 60 or doc in seen:
                continue
            seen.add(doc)
            ascii_share = sum(c.isascii() for c in doc) / len(doc)
            if ascii_share > 0.98:
                yield qual, doc


def main():
    import bisect
    import math

    docs = sorted(docstrings(), key=lambda x: (len(x[1]), x[0]))
    lengths = [len(d) for _, d in docs]
    # log-uniform target lengths from one sentence (60 characters) to several pages (6000): for each target, the
    # first unused document at least that long
    used, picked = set(), []
    for k in range(N_DOCS):
        target = 60 * math.exp(math.log(6000 / 60) * k / (N_DOCS - 1))
        i = bisect.bisect_left(lengths, target)
        while i in used and i < len(docs) - 1:
            i += 1
        while i in used:
            i -= 1
        used.add(i)
        picked.append(docs[i])
    picked = sorted(picked, key=lambda x: x[0])  # input order: alphabetical by qualified name
    out = Path(__file__).with_name("stdlib_docs.jsonl")
    with open(out, "w") as fh:
        for qual, doc in picked:
            fh.write(json.dumps({"text": doc, "source": f"Python {sys.version.split()[0]} stdlib: {qual}"}) + "\n")
    lens = sorted(len(d) for _, d in picked)
    print(f"{len(picked)} documents -> {out}; characters: min {lens[0]}, median {lens[len(lens) // 2]}, "
          f"max {lens[-1]}")


if __name__ == "__main__":
    main()
