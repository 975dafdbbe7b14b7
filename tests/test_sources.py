"""synth.sources: discover, profile (real files in shared/data and files made here), cache, prompt rendering, CLI."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import random
import shutil
import sqlite3
from pathlib import Path

import pytest

from synth.commands.sources import profile as profile_command
from synth.sources import (
    DataCard,
    ProfileLimits,
    SourceError,
    SourceProfileError,
    default_cache_dir,
    discover,
    profile,
    profile_all,
)

# `synth.sources.profile` the attribute is the function; the module is reached through importlib.
profile_module = importlib.import_module("synth.sources.profile")


def _tree_state(root: Path) -> dict[str, str]:
    """Every entry under root (hidden ones included) with a content hash, so any write or new file shows."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                state[rel] = "link:" + os.readlink(path)
            elif path.is_file():
                state[rel] = hashlib.sha256(path.read_bytes()).hexdigest() + f":{path.stat().st_mtime_ns}"
            else:
                state[rel] = "dir"
    return state


def _cards(results) -> dict[str, DataCard]:
    return {r.name: r for r in results if isinstance(r, DataCard)}


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


# ------------------------------------------------------------------------------------------ real shared sources


def test_chinook_sqlite_tables_counts_keys_and_source_untouched(shared_data: Path, cache: Path):
    src = shared_data / "sources" / "chinook"
    before = _tree_state(src)
    results = profile_all(src, cache_dir=cache)
    assert _tree_state(src) == before
    cards = _cards(results)
    assert set(cards) == {"Chinook_Sqlite.sqlite", "LICENSE.md"}
    db = cards["Chinook_Sqlite.sqlite"]
    assert db.kind == "sqlite" and db.size_bytes == (src / "Chinook_Sqlite.sqlite").stat().st_size
    assert db.sha256 == hashlib.sha256((src / "Chinook_Sqlite.sqlite").read_bytes()).hexdigest()
    assert len(db.tables) == 11
    rows = {t.name: t.rows for t in db.tables}
    assert rows["Track"] == 3503 and rows["Invoice"] == 412 and rows["InvoiceLine"] == 2240
    assert rows["PlaylistTrack"] == 8715
    track = db.table("Track")
    assert {(tuple(fk.columns), fk.ref_table, tuple(fk.ref_columns)) for fk in track.foreign_keys} == {
        (("AlbumId",), "Album", ("AlbumId",)),
        (("GenreId",), "Genre", ("GenreId",)),
        (("MediaTypeId",), "MediaType", ("MediaTypeId",)),
    }
    cols = {c.name: c for c in track.columns}
    assert cols["TrackId"].primary_key and cols["TrackId"].distinct == 3503
    assert cols["Name"].type == "NVARCHAR(200)"
    # Cross-check statistics against SQL run directly on the same file.
    with sqlite3.connect(f"file:{src / 'Chinook_Sqlite.sqlite'}?mode=ro&immutable=1", uri=True) as con:
        nulls, lo, hi, mean = con.execute(
            "SELECT SUM(Composer IS NULL), MIN(Milliseconds), MAX(Milliseconds), AVG(Milliseconds) FROM Track"
        ).fetchone()
        genres = con.execute("SELECT COUNT(DISTINCT GenreId) FROM Track").fetchone()[0]
    assert cols["Composer"].nulls == nulls > 0
    assert cols["Composer"].null_rate == pytest.approx(nulls / 3503, abs=1e-4)
    assert (cols["Milliseconds"].min, cols["Milliseconds"].max) == (lo, hi)
    assert cols["Milliseconds"].mean == pytest.approx(mean)
    assert cols["GenreId"].distinct == genres
    assert len(track.sample_rows) >= 3 and track.sample_rows[0]["TrackId"] == 1
    assert not db.approx
    license_doc = cards["LICENSE.md"].documents[0]
    assert license_doc.excerpt.startswith("Chinook Database") and license_doc.chars == 1117


def test_northwind_views_and_foreign_keys(shared_data: Path, cache: Path):
    card = profile(shared_data / "sources" / "northwind" / "northwind.db")
    tables = [t for t in card.tables if not t.is_view]
    views = [t for t in card.tables if t.is_view]
    assert (len(tables), len(views)) == (13, 16)
    assert card.table("Orders").rows == 830 and card.table("Order Details").rows == 2155
    assert card.table("Products").rows == 77 and card.table("Customers").rows == 93
    refs = {fk.ref_table for fk in card.table("Order Details").foreign_keys}
    assert refs == {"Orders", "Products"}
    assert card.table("Invoices").is_view and card.table("Invoices").rows == 2155
    # BLOB cells become a size marker, never raw bytes in JSON.
    photo = card.table("Employees").sample_rows[0]["Photo"]
    assert isinstance(photo, str) and photo.endswith("bytes>")
    json.loads(card.model_dump_json())


def test_spider_department_store_foreign_keys(shared_data: Path):
    card = profile(shared_data / "sources" / "spider_department_store" / "department_store.sqlite")
    assert len(card.tables) == 14
    assert sum(len(t.foreign_keys) for t in card.tables) >= 10
    fks = card.table("Order_Items").foreign_keys
    assert {fk.ref_table for fk in fks} == {"Products", "Customer_Orders"}


def test_excel_air_quality(shared_data: Path):
    card = profile(shared_data / "sources" / "excel" / "AirQualityUCI.xlsx")
    assert card.kind == "excel"
    sheet = card.table("AirQualityUCI")
    assert (sheet.rows, len(sheet.columns)) == (9357, 15)
    co = {c.name: c for c in sheet.columns}["CO(GT)"]
    assert co.min == -200  # the data set's missing-value marker
    assert {c.name: c for c in sheet.columns}["Date"].type == "datetime"


def test_seaborn_and_vega_files(shared_data: Path, cache: Path):
    diamonds = profile(shared_data / "sources" / "seaborn" / "diamonds.csv")
    t = diamonds.table("diamonds")
    assert (t.rows, len(t.columns), t.rows_approx) == (53940, 10, False)
    cols = {c.name: c for c in t.columns}
    assert cols["cut"].distinct == 5 and cols["cut"].type == "string"
    assert (cols["price"].min, cols["price"].max, cols["price"].type) == (326, 18823, "integer")
    assert cols["cut"].top_values[0].value == "Ideal"
    penguins = profile(shared_data / "sources" / "seaborn" / "penguins.csv").table("penguins")
    assert penguins.rows == 344 and {c.name: c for c in penguins.columns}["sex"].nulls == 11

    vega = shared_data / "sources" / "vega"
    for name, rows in (("iris.json", 150), ("barley.json", 120), ("seattle-weather.csv", 1461)):
        card = profile(vega / name)
        assert card.tables[0].rows == rows, name
    weather = {c.name: c for c in profile(vega / "seattle-weather.csv").tables[0].columns}
    assert weather["date"].type == "date" and weather["date"].min == "2012/01/01"
    lookup = profile(vega / "local_datasets.json").tables[0]
    assert [c.name for c in lookup.columns] == ["key", "value"]


def test_tmp_copy_of_sqlite_gets_no_side_files(shared_data: Path, tmp_path: Path, cache: Path):
    """A writable copy (the shared dir is read-only) proves no -journal/-wal/-shm and no caches appear."""
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(shared_data / "sources" / "chinook" / "Chinook_Sqlite.sqlite", src / "music.db")
    wal = sqlite3.connect(src / "wal.sqlite")
    wal.execute("PRAGMA journal_mode=WAL")
    wal.execute("CREATE TABLE t (x INTEGER)")
    wal.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(10)])
    wal.commit()
    wal.close()
    before = _tree_state(src)
    results = profile_all(src, cache_dir=cache)
    profile_all(src, cache_dir=cache, use_cache=False)
    assert _tree_state(src) == before
    assert _cards(results)["wal.sqlite"].table("t").rows == 10
    with pytest.raises(ValueError, match="inside the source dir"):
        profile_all(src, cache_dir=src / "cache")


# ------------------------------------------------------------------------------------------------ made here


def test_duckdb_tables_views_keys(tmp_path: Path, cache: Path):
    import duckdb

    src = tmp_path / "src"
    src.mkdir()
    con = duckdb.connect(str(src / "shop.duckdb"))
    con.execute("CREATE TABLE customer (id INTEGER PRIMARY KEY, name VARCHAR)")
    con.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customer(id), total DOUBLE)")
    con.execute("INSERT INTO customer VALUES (1, 'ada'), (2, 'bob'), (3, NULL)")
    con.execute("INSERT INTO orders SELECT i, 1 + i % 2, i * 1.5 FROM range(1, 41) t(i)")
    con.execute("CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 30")
    con.execute("CREATE SCHEMA archive")
    con.execute("CREATE TABLE archive.old (d DATE)")
    con.execute("INSERT INTO archive.old VALUES ('2020-01-02'), ('2021-03-04')")
    con.close()
    before = _tree_state(src)
    [card] = profile_all(src, cache_dir=cache)
    assert _tree_state(src) == before
    assert isinstance(card, DataCard) and card.kind == "duckdb"
    orders = card.table("orders")
    assert orders.rows == 40
    assert [(fk.columns, fk.ref_table, fk.ref_columns) for fk in orders.foreign_keys] == [
        (["customer_id"], "customer", ["id"])
    ]
    total = {c.name: c for c in orders.columns}["total"]
    assert (total.type, total.min, total.max) == ("DOUBLE", 1.5, 60.0)
    assert {c.name: c for c in card.table("customer").columns}["name"].nulls == 1
    assert card.table("big_orders").is_view and card.table("big_orders").rows == 20
    old = card.table("archive.old")
    assert old.columns[0].type == "DATE" and (old.columns[0].min, old.columns[0].max) == ("2020-01-02", "2021-03-04")


def test_json_jsonl_parquet_tsv_and_encodings(tmp_path: Path, cache: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = tmp_path / "src"
    (src / "nested").mkdir(parents=True)
    (src / "records.json").write_text(json.dumps([{"id": i, "tag": "ab"[i % 2], "meta": {"k": i}} for i in range(7)]))
    (src / "columns.json").write_text(json.dumps({"x": [1, 2, 3], "y": ["a", "b", None]}))
    (src / "wrapped.json").write_text(json.dumps({"version": 2, "items": [{"a": 1}, {"a": 2}]}))
    (src / "nested" / "events.jsonl").write_text("".join(json.dumps({"n": i, "ok": i > 1}) + "\n" for i in range(5)))
    pq.write_table(pa.table({"k": list(range(12)), "v": [0.5 * i for i in range(12)]}), src / "part.parquet")
    (src / "tabbed.tsv").write_text("a\tb\n1\tx\n2\ty\n")
    (src / "semi.csv").write_text("a;b;c\n1;2;3\n4;5;6\n")
    (src / "latin.csv").write_bytes("name,city\nJosé,Köln\n".encode("latin-1"))
    (src / "bom.csv").write_bytes(b"\xef\xbb\xbfid,v\n1,2\n")
    (src / "notes.md").write_text("# Notes\nThese files were made by the test.\n")
    before = _tree_state(src)
    cards = _cards(profile_all(src, cache_dir=cache))
    assert _tree_state(src) == before
    assert cards["records.json"].tables[0].rows == 7
    meta = {c.name: c for c in cards["records.json"].tables[0].columns}["meta"]
    assert meta.distinct == 7 and meta.examples[0] == '{"k": 0}'
    assert [c.name for c in cards["columns.json"].tables[0].columns] == ["x", "y"]
    assert cards["wrapped.json"].tables[0].name == "wrapped.items"
    events = cards["nested/events.jsonl"]
    assert events.kind == "jsonl" and events.tables[0].rows == 5
    assert {c.name: c for c in events.tables[0].columns}["ok"].type == "boolean"
    part = cards["part.parquet"].tables[0]
    assert (part.rows, [c.type for c in part.columns]) == (12, ["int64", "double"])
    assert cards["tabbed.tsv"].kind == "tsv" and cards["tabbed.tsv"].tables[0].rows == 2
    assert [c.name for c in cards["semi.csv"].tables[0].columns] == ["a", "b", "c"]
    latin = cards["latin.csv"]
    assert latin.tables[0].sample_rows[0] == {"name": "José", "city": "Köln"}
    assert any("latin-1" in n for n in latin.notes)
    assert [c.name for c in cards["bom.csv"].tables[0].columns] == ["id", "v"]
    assert cards["notes.md"].documents[0].lines == 2


def test_broken_inputs_get_one_line_errors_and_the_rest_continue(shared_data: Path, tmp_path: Path, cache: Path):
    src = tmp_path / "src"
    src.mkdir()
    chinook = (shared_data / "sources" / "chinook" / "Chinook_Sqlite.sqlite").read_bytes()
    (src / "truncated.sqlite").write_bytes(chinook[:300_000])
    (src / "corrupt.db").write_bytes(b"SQLite format 3\x00" + random.Random(1).randbytes(4000))
    (src / "garbage.csv").write_bytes(random.Random(2).randbytes(3000))
    (src / "empty.csv").write_bytes(b"")
    (src / "blank.csv").write_text("\n\n  \n")
    (src / "dangling.csv").symlink_to(src / "missing.csv")
    (src / "loop.csv").symlink_to(src / "loop.csv")
    (src / "bad.xlsx").write_text("not a workbook")
    (src / "bad.parquet").write_text("nope")
    (src / "bad.json").write_text('{"a": 1,')
    (src / "bad.jsonl").write_text('{"a": 1}\n{oops\n')
    (src / "unclosed.csv").write_text('a,b\n"x\n')
    (src / "good.csv").write_text("a,b\n1,2\n")
    before = _tree_state(src)
    results = profile_all(src, cache_dir=cache)
    assert _tree_state(src) == before
    errors = {Path(r.path).name: r.message for r in results if isinstance(r, SourceError)}
    assert set(_cards(results)) == {"good.csv"}
    expected = {
        "truncated.sqlite": "malformed",
        "corrupt.db": "not a database",
        "garbage.csv": "binary",
        "empty.csv": "empty",
        "blank.csv": "empty",
        "dangling.csv": "No such file",
        "loop.csv": "symbolic links",
        "bad.xlsx": "not a readable Excel workbook",
        "bad.parquet": "not a readable Parquet file",
        "bad.json": "invalid JSON at line 1",
        "bad.jsonl": "line 2: invalid JSON",
        "unclosed.csv": "cannot parse as CSV",
    }
    assert set(errors) == set(expected)
    for name, fragment in expected.items():
        assert fragment in errors[name], (name, errors[name])
        assert "\n" not in errors[name]
    with pytest.raises(SourceProfileError, match="empty"):
        profile(src / "empty.csv")


def test_discover_skips_hidden_junk_and_outside_links(tmp_path: Path):
    outside = tmp_path / "outside.csv"
    outside.write_text("a\n1\n")
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / ".hidden").mkdir()
    (src / "__pycache__").mkdir()
    (src / "data.csv").write_text("a\n1\n")
    (src / "sub" / "more.tsv").write_text("a\n1\n")
    (src / ".secret.csv").write_text("a\n1\n")
    (src / ".hidden" / "x.csv").write_text("a\n1\n")
    (src / "__pycache__" / "y.csv").write_text("a\n1\n")
    (src / ".DS_Store").write_bytes(b"\x00\x01")
    (src / "~$book.xlsx").write_bytes(b"lock")
    (src / "db.sqlite-journal").write_bytes(b"j")
    (src / "image.png").write_bytes(b"\x89PNG")
    (src / "out_link.csv").symlink_to(outside)
    (src / "in_link.csv").symlink_to(src / "data.csv")
    sqlite3.connect(src / "oddname.bin").execute("CREATE TABLE t (x)").connection.commit()
    found = discover(src)
    assert [(s.name, s.kind) for s in found] == [
        ("data.csv", "csv"),
        ("oddname.bin", "sqlite"),  # recognised by its magic header
        ("sub/more.tsv", "tsv"),
    ]
    assert discover(src / "data.csv")[0].name == "data.csv"
    with pytest.raises(FileNotFoundError):
        discover(tmp_path / "nope")


# ----------------------------------------------------------------------------------------------- cache, limits


def test_cache_hit_counts_profiler_calls(tmp_path: Path, cache: Path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.csv").write_text("x,y\n1,2\n3,4\n")
    (src / "b.json").write_text('[{"k": 1}]')
    calls: list[str] = []
    original = profile_module._profile_uncached

    def counting(source, *args):
        calls.append(source.name)
        return original(source, *args)

    monkeypatch.setattr(profile_module, "_profile_uncached", counting)
    first = profile_all(src, cache_dir=cache)
    assert sorted(calls) == ["a.csv", "b.json"] and len(list(cache.glob("*.json"))) == 2
    second = profile_all(src, cache_dir=cache)
    assert sorted(calls) == ["a.csv", "b.json"]  # no new profiler calls: both from cache
    assert second == first
    (src / "a.csv").write_text("x,y\n1,2\n3,4\n5,6\n")
    third = _cards(profile_all(src, cache_dir=cache))
    assert calls.count("a.csv") == 2 and third["a.csv"].tables[0].rows == 3
    profile_all(src, cache_dir=cache, use_cache=False)
    assert len(calls) == 5
    # The same content under another name is a cache hit that reports the new name and path.
    shutil.copy(src / "b.json", src / "c.json")
    copy = _cards(profile_all(src, cache_dir=cache))["c.json"]
    assert calls.count("c.json") == 0 and copy.path == str(src / "c.json")
    monkeypatch.setenv("DS_SYNTH_CACHE", str(tmp_path / "envcache"))
    assert default_cache_dir() == tmp_path / "envcache" / "profiles"


def test_sparse_10gb_csv_is_profiled_from_its_head(tmp_path: Path, cache: Path):
    """A 10 GB (sparse) file: only a bounded head and sampled hash blocks are read; the card says approx."""
    big = tmp_path / "src" / "huge.csv"
    big.parent.mkdir()
    line = "".join(f"{i},{i % 7},label{i % 3}\n" for i in range(10))
    with open(big, "w") as handle:
        handle.write("id,mod7,label\n")
        written = 0
        while written < 17 * 1024 * 1024:
            handle.write(line)
            written += len(line)
        handle.truncate(10 * 1024**3)
    [card] = profile_all(big.parent, cache_dir=cache)
    assert isinstance(card, DataCard), card
    table = card.tables[0]
    assert card.size_bytes == 10 * 1024**3 and card.hash_mode == "sampled"
    assert table.rows_approx and table.rows > 100_000_000
    assert table.stats_rows == ProfileLimits().max_stats_rows and card.approx
    assert {c.name: c for c in table.columns}["mod7"].distinct == 7
    text = card.to_prompt()
    assert f"~{table.rows} rows" in text and "approx" in text


def test_large_sqlite_uses_bounded_stats(tmp_path: Path):
    db = tmp_path / "big.sqlite"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    con.executemany("INSERT INTO t VALUES (?, ?)", [(i, f"v{i % 50}") for i in range(1, 3001)])
    con.commit()
    con.close()
    limits = ProfileLimits(max_stats_rows=200, full_read_bytes=1000)
    table = profile(db, limits=limits).table("t")
    assert (table.rows, table.rows_approx, table.stats_rows) == (3000, True, 200)
    small = profile(db).table("t")
    assert (small.rows, small.rows_approx, small.stats_rows) == (3000, False, 3000)


# ------------------------------------------------------------------------------------------------ prompt, CLI


def test_to_prompt_stays_within_budget_and_keeps_schema_first(shared_data: Path):
    card = profile(shared_data / "sources" / "northwind" / "northwind.db")
    for budget in (40, 200, 1000, 3000, 8000, 20000, 200000):
        assert len(card.to_prompt(max_chars=budget)) <= budget
    small = card.to_prompt(max_chars=1000)
    assert small.startswith("Source northwind.db (sqlite") and "more omitted" in small
    full = card.to_prompt(max_chars=200000)
    assert "View Invoices — 2155 rows" in full and "FK (OrderID) -> Orders(OrderID)" in full
    orders = full.split("Table Orders — 830 rows", 1)[1].split("\nTable ", 1)[0]
    assert "OrderDate: DATETIME" in orders and "range 1996-07-04" in orders
    assert orders.count('\n    {"OrderID"') == 3  # three example rows
    mid = card.to_prompt(max_chars=12000)
    assert "Table Territories" in mid and len(mid) > 8000  # every table kept; detail trimmed to fit
    with pytest.raises(ValueError, match="max_chars"):
        card.to_prompt(max_chars=10)


def test_profile_command_json_rich_and_exit_codes(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("DS_SYNTH_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok.csv").write_text("a,b\n1,x\n2,\n")
    (src / "bad.csv").write_bytes(b"")
    assert profile_command(src, as_json=True) == 0
    items = json.loads(capsys.readouterr().out)
    assert items == [
        {"path": str(src / "bad.csv"), "error": "empty file (0 bytes)"},
        items[1],
    ]
    ok = items[1]
    assert ok["name"] == "ok.csv" and ok["kind"] == "csv"
    assert ok["tables"][0]["rows"] == 2
    assert ok["tables"][0]["columns"][1] == {"name": "b", "type": "string", "nulls": 1, "distinct": 1}
    assert profile_command(src, as_json=False) == 0
    out = capsys.readouterr().out
    assert "ok.csv" in out and "empty file" in out and "1 source(s) profiled, 1 failed" in out
    empty = tmp_path / "empty"
    empty.mkdir()
    assert profile_command(empty) == 1
    assert "no data sources found" in capsys.readouterr().err
    (src / "ok.csv").unlink()
    assert profile_command(src, as_json=True) == 1
    assert "failed to profile" in capsys.readouterr().err
    assert profile_command(tmp_path / "missing") == 2
    assert "no such directory" in capsys.readouterr().err


def test_cli_sources_profile(tmp_path: Path, monkeypatch):
    from typer.testing import CliRunner

    from synth.cli import app

    src = tmp_path / "src"
    src.mkdir()
    (src / "t.csv").write_text("a\n1\n2\n")
    result = CliRunner().invoke(app, ["sources", "profile", str(src), "--json", "--no-cache"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["tables"][0]["rows"] == 2
    assert CliRunner().invoke(app, ["sources", "profile", str(tmp_path / "nope")]).exit_code == 2


def test_excel_sheets_beyond_the_stats_limit_are_approx(tmp_path: Path):
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.title = "long"
    sheet.append(["n", "parity"])
    for i in range(300):
        sheet.append([i, "even" if i % 2 == 0 else "odd"])
    book.create_sheet("empty")
    book.save(tmp_path / "book.xlsx")
    card = profile(tmp_path / "book.xlsx", limits=ProfileLimits(max_stats_rows=100))
    long = card.table("long")
    assert (long.rows, long.rows_approx, long.stats_rows, long.stats_approx) == (300, True, 100, True)
    assert card.table("empty").rows == 0
    exact = profile(tmp_path / "book.xlsx").table("long")
    assert (exact.rows, exact.rows_approx, exact.columns[1].distinct) == (300, False, 2)


def test_unwritable_cache_warns_and_still_profiles(tmp_path: Path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the cache dir should be")
    src = tmp_path / "src"
    src.mkdir()
    (src / "t.csv").write_text("a\n1\n")
    with pytest.warns(UserWarning, match="not writable"):
        [card] = profile_all(src, cache_dir=blocker / "profiles")
    assert isinstance(card, DataCard) and card.tables[0].rows == 1


def test_csv_dialect_fallbacks(shared_data: Path, tmp_path: Path):
    wikitq = profile(shared_data / "instruct" / "wikitq_train_sample" / "csv" / "202-csv" / "240.csv")
    assert "backslash-escaped quotes" in wikitq.notes
    assert wikitq.tables[0].sample_rows[0]["Single"] == '"Heavy"'
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("a,b\n" + "".join(f"{i},{i}\n" for i in range(30)) + "1,2,3\n")
    card = profile(ragged)
    assert card.tables[0].rows == 30 and "1 malformed line(s) skipped" in card.notes
    mostly_bad = tmp_path / "mostly_bad.csv"
    mostly_bad.write_text("a,b\n1,2\n" + "1,2,3\n" * 5)
    with pytest.raises(SourceProfileError, match="cannot parse as CSV"):
        profile(mostly_bad)


def test_referenced_tables_follow_foreign_keys_and_id_columns(tmp_path: Path) -> None:
    import sqlite3

    from synth.sources import profile_all

    database = tmp_path / "music.sqlite"
    with sqlite3.connect(database) as con:
        con.executescript(
            "CREATE TABLE Album (AlbumId INTEGER PRIMARY KEY, Title TEXT);"
            "CREATE TABLE Genre (GenreId INTEGER PRIMARY KEY, Name TEXT);"
            "CREATE TABLE Label (LabelId INTEGER PRIMARY KEY);"
            "CREATE TABLE Track (TrackId INTEGER PRIMARY KEY, AlbumId INTEGER REFERENCES Album(AlbumId),"
            " GenreId INTEGER, Name TEXT);"
        )
    card = profile_all(database, use_cache=False)[0]
    assert sorted(card.referenced_tables("Track")) == ["Album", "Genre"]  # FK, and a GenreId column
    assert card.referenced_tables("Album") == [] and card.referenced_tables(None) == []
    visits = [card.focus_table(v) for v in range(4)]
    assert sorted(visits) == ["Album", "Genre", "Label", "Track"]  # every table once before any repeats
    assert card.focus_table(4) == visits[0]


