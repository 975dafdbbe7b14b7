"""`synth demo-sources`: a small multi-format source folder built from datasets bundled inside scikit-learn.

Only the `load_*` loaders are used (they read CSVs shipped in the wheel); nothing is downloaded. Output is
byte-for-byte deterministic, so a demo run can be reproduced and its source hashes compared.
"""

from __future__ import annotations

import io
import os
import re
import sqlite3
import tempfile
import zipfile
from pathlib import Path
from typing import Callable, Union

DEMO_FILES = ("wine.sqlite", "diabetes.csv", "iris.csv", "breast_cancer.xlsx", "README.md")

_FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_FIXED_XML_TIME = "2024-01-01T00:00:00Z"

_README = """\
# Demo data sources (written by `synth demo-sources`)

Small real datasets that ship inside scikit-learn (read with its `load_*` functions; nothing was downloaded),
arranged in the formats ds-synth profiles:

| file | content |
|---|---|
| `wine.sqlite` | SQLite: `cultivar` (3 rows) and `wine_sample` (178 rows, 13 chemical measurements, `cultivar_id` → `cultivar.cultivar_id`), view `cultivar_summary` |
| `diabetes.csv` | 442 diabetes patients: age, sex, bmi, blood pressure, six serum measurements (unscaled) and `disease_progression` one year later |
| `iris.csv` | 150 iris flowers: four measurements in cm and the species |
| `breast_cancer.xlsx` | sheet `samples`: 569 breast-mass images × 30 features + `diagnosis`; sheet `features`: what each feature measures |

Origins and licenses:
- Wine: UCI Machine Learning Repository, "Wine" (Forina et al.; Aeberhard & Forina 1991), CC BY 4.0.
- Diabetes: Efron, Hastie, Johnstone & Tibshirani (2004), "Least Angle Regression", Annals of Statistics;
  data from https://www4.stat.ncsu.edu/~boos/var.select/diabetes.html as distributed with scikit-learn.
- Iris: R. A. Fisher (1936), UCI Machine Learning Repository "Iris", CC BY 4.0.
- Breast Cancer Wisconsin (Diagnostic): Wolberg, Street & Mangasarian (1995), UCI Machine Learning Repository, CC BY 4.0.

scikit-learn itself is BSD-3-Clause licensed. See each loader's `DESCR` in scikit-learn for full descriptions.
"""


def write_demo_sources(directory: Union[str, os.PathLike], force: bool = False) -> list[Path]:
    """Write the demo sources into `directory` (created if missing) and return the written paths.

    Refuses (FileExistsError, naming the files) to overwrite existing files unless `force` is set.
    """
    target = Path(directory)
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"demo-sources: {target} exists and is not a directory")
    existing = [name for name in DEMO_FILES if (target / name).exists()]
    if existing and not force:
        raise FileExistsError(
            f"demo-sources: {target} already has {', '.join(existing)}; use --force to overwrite"
        )
    target.mkdir(parents=True, exist_ok=True)
    writers: dict[str, Callable[[Path], None]] = {
        "wine.sqlite": _write_wine_sqlite,
        "diabetes.csv": _write_diabetes_csv,
        "iris.csv": _write_iris_csv,
        "breast_cancer.xlsx": _write_breast_cancer_xlsx,
        "README.md": lambda path: path.write_text(_README, encoding="utf-8"),
    }
    written = []
    for name in DEMO_FILES:
        final = target / name
        # Write beside the target and rename, so an interrupted run never leaves a half-written source.
        fd, tmp_name = tempfile.mkstemp(dir=target, prefix=f".{name}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            tmp.unlink()
            writers[name](tmp)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                tmp.unlink()
        written.append(final)
    return written


def _write_wine_sqlite(path: Path) -> None:
    from sklearn.datasets import load_wine

    wine = load_wine(as_frame=True)
    frame = wine.frame
    features = [c for c in frame.columns if c != "target"]
    columns = {f: re.sub(r"[^0-9a-zA-Z]+", "_", f).strip("_") for f in features}
    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA foreign_keys = ON")
        con.execute(
            "CREATE TABLE cultivar (cultivar_id INTEGER PRIMARY KEY, name TEXT NOT NULL, sklearn_label TEXT NOT NULL)"
        )
        con.executemany(
            "INSERT INTO cultivar VALUES (?, ?, ?)",
            [(i + 1, f"Cultivar {i + 1}", label) for i, label in enumerate(wine.target_names)],
        )
        feature_sql = ", ".join(f"{columns[f]} REAL NOT NULL" for f in features)
        con.execute(
            "CREATE TABLE wine_sample (sample_id INTEGER PRIMARY KEY, "
            "cultivar_id INTEGER NOT NULL REFERENCES cultivar(cultivar_id), " + feature_sql + ")"
        )
        placeholders = ", ".join("?" for _ in range(len(features) + 2))
        con.executemany(
            f"INSERT INTO wine_sample VALUES ({placeholders})",
            [
                (i + 1, int(row["target"]) + 1, *(float(row[f]) for f in features))
                for i, row in frame.iterrows()
            ],
        )
        con.execute(
            "CREATE VIEW cultivar_summary AS SELECT c.name AS cultivar, COUNT(*) AS samples, "
            "AVG(w.alcohol) AS mean_alcohol, AVG(w.proline) AS mean_proline "
            "FROM wine_sample w JOIN cultivar c USING (cultivar_id) GROUP BY c.name"
        )
        con.commit()
    finally:
        con.close()


def _write_diabetes_csv(path: Path) -> None:
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True, scaled=False).frame.rename(columns={"target": "disease_progression"})
    frame.insert(0, "patient_id", range(1, len(frame) + 1))
    frame.to_csv(path, index=False, lineterminator="\n")


def _write_iris_csv(path: Path) -> None:
    from sklearn.datasets import load_iris

    iris = load_iris(as_frame=True)
    frame = iris.data.rename(columns=lambda c: c.replace(" (cm)", "_cm").replace(" ", "_"))
    frame["species"] = [str(iris.target_names[t]) for t in iris.target]
    frame.to_csv(path, index=False, lineterminator="\n")


def _write_breast_cancer_xlsx(path: Path) -> None:
    import pandas as pd
    from sklearn.datasets import load_breast_cancer

    cancer = load_breast_cancer(as_frame=True)
    samples = cancer.data.copy()
    samples.insert(0, "sample_id", range(1, len(samples) + 1))
    samples["diagnosis"] = [str(cancer.target_names[t]) for t in cancer.target]
    features = pd.DataFrame(
        [
            {"feature": name, "statistic": name.split(" ", 1)[0], "measure": name.split(" ", 1)[1]}
            for name in cancer.feature_names
        ]
    )
    buffer = io.BytesIO()
    with pd.ExcelWriter(buffer, engine="openpyxl") as writer:
        samples.to_excel(writer, sheet_name="samples", index=False)
        features.to_excel(writer, sheet_name="features", index=False)
    path.write_bytes(_deterministic_zip(buffer.getvalue()))


def _deterministic_zip(data: bytes) -> bytes:
    """openpyxl stamps the save time into docProps/core.xml and every zip entry; pin both."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            content = src.read(info.filename)
            if info.filename == "docProps/core.xml":
                content = re.sub(
                    rb"(<dcterms:(created|modified)[^>]*>)[^<]*(</dcterms:\2>)",
                    lambda m: m.group(1) + _FIXED_XML_TIME.encode() + m.group(3),
                    content,
                )
            entry = zipfile.ZipInfo(info.filename, date_time=_FIXED_ZIP_TIME)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = 0o644 << 16
            dst.writestr(entry, content)
    return out.getvalue()
