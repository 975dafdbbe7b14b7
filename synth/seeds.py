"""Task seeds: what a task will be about, read off the DataCard before the questioner writes it.

Every column gets a role from its profile — `group` (a low-cardinality categorical: a group-by key), `measure`
(a numeric quantity), `time` (a date/time axis), `key` (an id or a foreign key: a join path, never a group key),
`identifier` (unique names), `text` (free text). A seed then picks a task kind that fits the category and the
difficulty, and the columns it works on: a group-by never takes a continuous or id column as its key, a medium or
hard task follows a real foreign key or a time axis, a hard task comes with its steps (one code cell each, in order)
over the seed's columns. The questioner phrases the task over the seed; the record keeps it.
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Collection

from synth.sources.card import ColumnProfile, DataCard, TableProfile

ROLES = ("group", "measure", "time", "key", "identifier", "text")
_NUMERIC = re.compile(r"int|real|float|double|numeric|decimal|number", re.IGNORECASE)
_TEXTUAL = re.compile(r"char|text|string|clob|varchar", re.IGNORECASE)
_TEMPORAL = re.compile(r"date|time", re.IGNORECASE)
MAX_GROUP_VALUES = 30  # a categorical column with more values is not a group-by key
MAX_INTEGER_GROUP_VALUES = 12  # an integer column is a group key only when it takes a few values (a rating, a year)


def _is_id_name(name: str) -> bool:
    low = name.lower()
    return low in ("id", "key") or low.endswith(("_id", "_key")) or low.startswith("id_") or (
        len(name) > 2 and name.endswith("Id") and name[-3].islower())


def _integral(column: ColumnProfile) -> bool:
    if re.search(r"int", column.type, re.IGNORECASE):
        return True
    values = [v for v in (column.min, column.max, *column.examples) if isinstance(v, (int, float))
              and not isinstance(v, bool)]
    return bool(values) and all(float(v).is_integer() for v in values)


def column_role(column: ColumnProfile, table: TableProfile) -> str:
    rows = max(1, table.rows)
    fk_columns = {c for fk in table.foreign_keys for c in fk.columns}
    numeric = bool(_NUMERIC.search(column.type)) or isinstance(column.min, (int, float)) and not isinstance(
        column.min, bool)
    if column.primary_key or column.name in fk_columns or (_is_id_name(column.name) and numeric):
        return "key"
    if _TEMPORAL.search(column.type) or (re.search(r"date|time|year|month|day", column.name, re.IGNORECASE)
                                         and not numeric):
        return "time"
    few = 2 <= column.distinct < max(3, rows // 2)
    if numeric:
        # A continuous column is never a group-by key, however few values it happens to take.
        return "group" if few and _integral(column) and column.distinct <= MAX_INTEGER_GROUP_VALUES else "measure"
    if few and column.distinct <= MAX_GROUP_VALUES:
        return "group"
    if column.distinct >= 0.9 * (rows - column.nulls) and rows > 1:
        examples = [str(e) for e in column.examples if e is not None]
        long = examples and sum(len(e) for e in examples) / len(examples) > 40
        return "text" if long else "identifier"
    return "text" if _TEXTUAL.search(column.type) or column.type == "string" else "identifier"


def column_roles(table: TableProfile) -> dict[str, str]:
    return {c.name: column_role(c, table) for c in table.columns}


def roles_by_name(cards: list[DataCard]) -> dict[str, set[str]]:
    """Every column name in `cards` and the roles it has in the tables where it occurs."""
    roles: dict[str, set[str]] = {}
    for card in cards:
        for table in card.tables:
            for column, role in column_roles(table).items():
                roles.setdefault(column, set()).add(role)
    return roles


def continuous_columns(cards: list[DataCard]) -> list[str]:
    """Column names that are a measure wherever they occur in `cards`: never a group-by key. A name that is a
    category in some table (e.g. a `year` with a few values there) is left out."""
    return sorted(name for name, seen in roles_by_name(cards).items() if seen == {"measure"})


@dataclass
class TaskSeed:
    """What a task is about. `columns` maps a part of the task (group, measure, time, target, …) to a column."""

    kind: str
    category: str
    difficulty: str
    table: str | None
    columns: dict[str, str] = field(default_factory=dict)
    join: dict[str, str] | None = None  # {"table", "on", "ref_column"} along a real foreign key
    min_cells: int = 1  # a hard task has several steps
    steps: list[str] = field(default_factory=list)  # a hard task's min_cells steps, in order ([]: no columns)
    issue: str | None = None  # data_cleaning: the problem the profile shows (e.g. "3 nulls in Composer")
    qualified: bool = True  # columns named `table.column`; False for a one-table file (a CSV has no table names)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """The seed as the questioner reads it."""
        parts = [f"Task kind: {self.kind} — {KIND_TEXT.get(self.kind, self.kind)}."]
        for part, column in self.columns.items():
            parts.append(f"{part}: {self.names(column)}")
        if self.join:
            parts.append(f"join: `{self.table}.{self.join['on']}` = `{self.join['table']}.{self.join['ref_column']}`")
        if self.issue:
            parts.append(f"data problem: {self.issue}")
        if self.steps:
            parts.append("steps, one code cell each: " + " ".join(f"({n}) {step}" for n, step in
                                                                  enumerate(self.steps, 1)))
        elif self.min_cells > 1:
            parts.append(f"the task needs at least {self.min_cells} separate steps")
        return "; ".join(parts)

    def column_names(self) -> list[str]:
        """The bare names of the columns the seed works on, and a join's table and key: a task over the seed names
        at least one of them."""
        names = [c.strip().split(".")[-1] for column in self.columns.values() for c in column.split(",")]
        if self.join:
            names += [self.join["table"], self.join["on"], self.join["ref_column"]]
        return list(dict.fromkeys(name for name in names if name))

    def names(self, column: str) -> str:
        """`column` (one name or a comma-separated list) in backticks, as the task names it: `table.column` in a
        source with several tables, bare in a one-table file."""
        return ", ".join(f"`{c.strip()}`" if "." in c or not self.table or not self.qualified
                         else f"`{self.table}.{c.strip()}`" for c in column.split(","))


KIND_TEXT = {
    "group_aggregate": "aggregate the measure per value of the group column and report the extreme group",
    "filter_count": "count (or sum) the rows that meet a condition on the group column",
    "extreme_row": "find the row with the largest or smallest measure and report it",
    "filtered_group_aggregate": "filter the rows on one measure, aggregate another measure per group, and compare "
                                "the top two groups",
    "join_aggregate": "join along the foreign key, then aggregate the measure per a column of the joined table",
    "time_trend": "aggregate the measure over the time axis and describe the trend",
    "group_difference": "compare the measure between groups and say how large the difference is",
    "correlation": "measure how two numeric columns relate (a correlation coefficient)",
    "missing_values": "count the missing values, fix them with a stated method, and show none are left",
    "duplicates": "find duplicated rows or keys, remove them, and show the counts before and after",
    "outliers": "find outliers of the measure with a stated rule and count them",
    "derive_column": "derive a new column from existing ones and save the table",
    "pivot": "reshape: one row per group value, one column per aggregate, saved to a file",
    "join_table": "join the table with the one its foreign key references and save the result",
    "regression": "predict the numeric target from other columns with a held-out test split and report the error",
    "classification": "predict the group column from other columns with a held-out split and report accuracy",
    "report": "write a short report with key figures on the focus columns",
    "open_question": "investigate an open question about the focus columns with evidence",
}

_KINDS = {
    "data_analysis": {"easy": ["group_aggregate", "filter_count", "extreme_row"],
                      "medium": ["join_aggregate", "group_aggregate", "time_trend"],
                      "hard": ["join_aggregate", "time_trend", "filtered_group_aggregate"]},
    "data_insight": {"easy": ["group_difference", "correlation"], "medium": ["group_difference", "correlation"],
                     "hard": ["time_trend", "join_aggregate", "filtered_group_aggregate"]},
    "data_cleaning": {"easy": ["missing_values", "duplicates", "outliers"],
                      "medium": ["missing_values", "duplicates", "outliers"],
                      "hard": ["missing_values", "outliers", "duplicates"]},
    "data_preparation": {"easy": ["derive_column", "pivot"], "medium": ["pivot", "join_table"],
                         "hard": ["join_table", "pivot"]},
    "modeling": {"easy": ["regression", "classification"], "medium": ["regression", "classification"],
                 "hard": ["regression", "classification"]},
    "report_generation": {"easy": ["report"], "medium": ["report"], "hard": ["report"]},
    "open_research": {"easy": ["open_question"], "medium": ["open_question"], "hard": ["open_question"]},
}
_MIN_CELLS = {"easy": 1, "medium": 1, "hard": 3}

# A hard task's steps per kind: each one a computation whose result the next builds on, so that the task is worked
# in that many cells by any model. Placeholders are the seed's parts (`group by` -> {group_by}), {table}, {joined}.
_STEPS = {
    "join_aggregate": ["join {table} with {joined} along the foreign key and print how many rows matched",
                       "aggregate {measure} per {group_by} and print the groups sorted",
                       "report the top group and its share of the total"],
    "time_trend": ["parse {time} as dates and print the period it covers",
                   "aggregate {measure} per year (or per month) and print the series",
                   "compare the first and the last period and state the trend with its change in percent"],
    "filtered_group_aggregate": ["keep the rows whose {filter_on} is above its median and print how many remain",
                                 "aggregate {measure} per {group_by} over those rows and print it",
                                 "compare the top two groups and report their difference"],
    "missing_values": ["count the missing values of {column} and print a few affected rows",
                       "fill them with a stated method (the median of a number, the most frequent value otherwise)",
                       "print the number of missing values left and the value used"],
    "outliers": ["compute the quartiles of {measure} and print the 1.5 IQR bounds",
                 "count the rows outside the bounds and print a few of them",
                 "compare the mean of {measure} with and without the outliers"],
    "duplicates": ["count the repeated values of {column} and print a few",
                   "remove the duplicated rows, keeping the first of each",
                   "print the row counts before and after"],
    "join_table": ["join {table} with {joined} along the foreign key",
                   "print the joined row count and how many rows found no match",
                   "save the joined table to a CSV file and print its shape"],
    "pivot": ["aggregate {values} per {rows}: mean, minimum and maximum",
              "reshape the result to one row per value of {rows} and one column per aggregate",
              "save it to a CSV file, read the file back and print it"],
    "regression": ["split the rows into a training set and a held-out test set (20%, a fixed random seed)",
                   "fit a model that predicts {target} from {features} on the training set",
                   "report the model's error (RMSE) on the test set"],
    "classification": ["split the rows into a training set and a held-out test set (20%, a fixed random seed)",
                       "fit a classifier that predicts {target} from {features} on the training set",
                       "report its accuracy on the test set"],
    "report": ["compute summary statistics of {focus} and print them",
               "compare them across groups or over time and print the comparison",
               "write a short markdown report with the key figures"],
    "open_question": ["describe {focus} and print the figures",
                      "look for a pattern (a difference between groups, a relation or a trend) and print the "
                      "figures that show it",
                      "answer the question from that evidence"],
}


def _steps(seed: TaskSeed) -> list[str]:
    fields = {part.replace(" ", "_"): seed.names(column) for part, column in seed.columns.items()}
    fields["table"] = f"`{seed.table}`" if seed.table else "the table"
    fields["joined"] = f"`{seed.join['table']}`" if seed.join else "the table it references"
    try:
        return [step.format(**fields) for step in _STEPS[seed.kind]]
    except KeyError:  # a kind without steps, or a seed without the columns its steps name (an open question
        return []     # with no focus column): the seed says how many steps, not which


def task_seed(card: DataCard, focus: str | None, category: str, difficulty: str, key: str,
              exclude: Collection[str] = ()) -> TaskSeed | None:
    """A seed for a task on `focus` (a table of `card`), or None when the card has no table. `key` (the episode
    id) makes the choice deterministic. A kind the table cannot support is skipped for the next one, and so are
    the kinds in `exclude` (a seed the questioner could not phrase)."""
    if focus is None or not card.tables:
        return None
    rng = random.Random(f"seed:{key}")
    kinds = list(_KINDS.get(category, {}).get(difficulty, []))
    rng.shuffle(kinds)
    kinds = [kind for kind in kinds if kind not in exclude]
    # The focus table first; when it cannot carry any kind of the category (a 3-row lookup table), the other
    # tables, largest first.
    others = sorted((t for t in card.tables if t.name != focus and not t.is_view), key=lambda t: -t.rows)
    for table in [card.table(focus), *others]:
        roles = column_roles(table)
        by_role: dict[str, list[str]] = {r: [c for c, role in roles.items() if role == r] for r in ROLES}
        for kind in kinds:
            seed = _build(kind, card, table, by_role, rng)
            if seed is not None:
                seed.category, seed.difficulty = category, difficulty
                return _sized(seed, card)
    return _sized(TaskSeed(kind="open_question", category=category, difficulty=difficulty, table=focus), card)


def _sized(seed: TaskSeed, card: DataCard) -> TaskSeed:
    """The seed with the steps its difficulty takes, its columns named as `card` names them."""
    seed.qualified = len(card.tables) > 1
    seed.min_cells = _MIN_CELLS.get(seed.difficulty, 1)
    if seed.min_cells > 1:
        seed.steps = _steps(seed)
    return seed


def _pick(rng: random.Random, names: list[str]) -> str | None:
    return rng.choice(sorted(names)) if names else None


def _build(kind: str, card: DataCard, table: TableProfile, by_role: dict[str, list[str]],
           rng: random.Random) -> TaskSeed | None:
    group, measure = _pick(rng, by_role["group"]), _pick(rng, by_role["measure"])
    time = _pick(rng, by_role["time"])
    seed = TaskSeed(kind=kind, category="", difficulty="", table=table.name)
    if kind in ("group_aggregate", "filter_count", "group_difference"):
        if group is None or (measure is None and kind != "filter_count"):
            return None
        seed.columns = {"group by": group, **({"measure": measure} if measure else {})}
    elif kind == "filtered_group_aggregate":
        measures = sorted(by_role["measure"])
        if group is None or len(measures) < 2:
            return None
        condition, value = rng.sample(measures, 2)
        seed.columns = {"filter on": condition, "group by": group, "measure": value}
    elif kind == "extreme_row":
        label = _pick(rng, by_role["identifier"]) or _pick(rng, by_role["text"]) or _pick(rng, by_role["group"])
        if measure is None:
            return None
        seed.columns = {"measure": measure, **({"report": label} if label else {})}
    elif kind == "correlation":
        measures = sorted(by_role["measure"])
        if len(measures) < 2:
            return None
        first, second = rng.sample(measures, 2)
        seed.columns = {"x": first, "y": second}
    elif kind == "time_trend":
        if time is None or measure is None:
            return None
        seed.columns = {"time": time, "measure": measure}
    elif kind in ("join_aggregate", "join_table"):
        joins = [fk for fk in table.foreign_keys if fk.ref_table != table.name and len(fk.columns) == 1]
        if not joins:
            return None
        fk = rng.choice(joins)
        other = next((t for t in card.tables if t.name == fk.ref_table), None)
        if other is None:
            return None
        other_groups = [c for c, r in column_roles(other).items() if r in ("group", "identifier")]
        seed.join = {"table": other.name, "on": fk.columns[0], "ref_column": fk.ref_columns[0] if fk.ref_columns
                     else fk.columns[0]}
        if kind == "join_aggregate":
            if measure is None or not other_groups:
                return None
            seed.columns = {"measure": measure, "group by": f"{other.name}.{_pick(rng, other_groups)}"}
    elif kind == "missing_values":
        gaps = [c for c in table.columns if c.nulls > 0]
        if not gaps:
            return None
        column = rng.choice(sorted(gaps, key=lambda c: c.name))
        seed.columns = {"column": column.name}
        seed.issue = f"{column.nulls} missing value(s) in {column.name} ({column.null_rate:.0%})"
    elif kind == "duplicates":
        keyish = [c for c in table.columns if by_role["identifier"] and c.name in by_role["identifier"]
                  and c.distinct < table.rows - c.nulls]
        if not keyish:
            return None
        column = keyish[0]
        seed.columns = {"column": column.name}
        seed.issue = f"{column.name} has {table.rows - column.nulls - column.distinct} repeated value(s)"
    elif kind == "outliers":
        if measure is None:
            return None
        seed.columns = {"measure": measure}
    elif kind == "derive_column":
        measures = sorted(by_role["measure"])
        if not measures:
            return None
        seed.columns = {"from": ", ".join(measures[:2])}
    elif kind == "pivot":
        if group is None or measure is None:
            return None
        seed.columns = {"rows": group, "values": measure}
    elif kind == "regression":
        features = [c for c in by_role["measure"] + by_role["group"] if c != measure]
        if measure is None or not features:
            return None
        seed.columns = {"target": measure, "features": ", ".join(sorted(features)[:4])}
    elif kind == "classification":
        features = sorted(by_role["measure"])
        if group is None or not features:
            return None
        seed.columns = {"target": group, "features": ", ".join(features[:4])}
    elif kind in ("report", "open_question"):
        focus = [c for c in (group, measure, time) if c]
        if not focus:
            return None
        seed.columns = {"focus": ", ".join(focus)}
    else:
        return None
    return seed


__all__ = ["ROLES", "TaskSeed", "KIND_TEXT", "column_role", "column_roles", "continuous_columns", "roles_by_name",
           "task_seed"]
