import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synth import protocol as P

GOOD = (
    "<Analyze>\nLoad the file.\n</Analyze>\n<Code>\n```python\nimport pandas as pd\nprint(1)\n```\n</Code>\n"
    "<Execute>\n1\n</Execute>\n<Understand>\nIt prints 1.\n</Understand>\n<Answer>\n1\n</Answer>"
)


def test_special_tokens_in_upstream_order():
    assert P.SPECIAL_TOKENS == [
        "<Analyze>", "</Analyze>", "<Understand>", "</Understand>", "<Code>", "</Code>",
        "<Execute>", "</Execute>", "<Answer>", "</Answer>",
    ]


def test_parse_well_formed():
    parsed = P.parse(GOOD)
    assert [a.kind for a in parsed.actions] == ["Analyze", "Code", "Execute", "Understand", "Answer"]
    assert parsed.answer == "\n1\n"
    code = parsed.of_kind("Code")[0]
    assert GOOD[code.start : code.end] == code.raw
    assert P.render(parsed) == GOOD
    assert P.validate(GOOD) == []
    assert P.is_well_formed(GOOD)


def _codes(text, **kw):
    return [i.code for i in P.validate(text, **kw)]


@pytest.mark.parametrize(
    "text, code",
    [
        ("<Analyze>x</Analyze><Code>print(1)", "unclosed_tag"),
        ("<Analyze>x</Analyze></Code><Answer>a</Answer>", "unexpected_closing_tag"),
        ("<Analyze>x</Analyze>hello<Answer>a</Answer>", "text_outside_tags"),
        ("<Analyze>x<Code>y</Code></Analyze><Answer>a</Answer>", "nested_tag"),
        ("<Analyze>x</Analyze>", "missing_answer"),
        ("<Code>x</Code><Answer>a</Answer>", "not_starting_with_analyze"),
        ("<Analyze>x</Analyze><Answer>a</Answer>\n<Analyze>more</Analyze>", "content_after_answer"),
        ("", "empty"),
    ],
)
def test_validate_finds_defect(text, code):
    assert code in _codes(text)


def test_execute_written_by_model_only_flagged_when_model_written():
    text = "<Analyze>a</Analyze><Code>x</Code><Execute>fake</Execute><Answer>b</Answer>"
    assert "model_wrote_execute" in _codes(text, model_written=True)
    assert _codes(text) == []


def test_issue_positions_point_at_the_defect():
    text = "<Analyze>x</Analyze>  </Code><Answer>a</Answer>"
    (issue,) = P.validate(text)
    assert issue.code == "unexpected_closing_tag" and text[issue.position :].startswith("</Code>")
    assert "</Code>" in issue.message


def test_execute_content_is_opaque():
    text = "<Analyze>a</Analyze><Code>x</Code><Execute>printed <Answer> literally</Execute><Answer>b</Answer>"
    assert P.validate(text) == []
    assert P.parse(text).answer == "b"


def test_require_answer_false_accepts_partial_turn():
    assert P.validate("<Analyze>a</Analyze>\n<Code>x</Code>", require_answer=False) == []


def test_unclosed_action_stops_at_next_tag():
    parsed = P.parse("<Analyze>plan <Code>x</Code><Answer>y</Answer>")
    kinds = [(a.kind, a.closed) for a in parsed.actions]
    assert kinds == [("Analyze", False), ("Code", True), ("Answer", True)]
    assert parsed.actions[0].content == "plan "


@pytest.mark.parametrize(
    "body, code",
    [
        ("\n```python\nprint(1)\n```\n", "print(1)"),
        ("\n```py\nx = 2\n```\n", "x = 2"),
        ("\n```\nprint(3)\n```\n", "print(3)"),
        ("\n```sql\nselect 1\n```\n```python\nprint(4)\n```", "print(4)"),
        ("\n  print(5)  \n", "print(5)"),
        ("\n```python\nprint(6)\n", "print(6)"),  # fence cut short by the stop string
        ("intro\n```python\na = 1\n```\nthen\n```python\nb = 2\n```", "a = 1"),
    ],
)
def test_extract_code(body, code):
    assert P.extract_code(body) == code


def test_format_size():
    assert P.format_size(532) == "532B"
    assert P.format_size(10854) == "10.6KB"
    assert P.format_size(int(1.2 * 1024 * 1024)) == "1.2MB"


def test_build_user_prompt(tmp_path):
    (tmp_path / "sub").mkdir()
    f = tmp_path / "sub" / "t.csv"
    f.write_text("a,b\n" + "1,2\n" * 3000)
    prompt = P.build_user_prompt("Mean of a?", [f], root=tmp_path)
    head, data = prompt.split("\n\n# Data\n")
    assert head == "# Instruction\nMean of a?"
    assert data.startswith("File 1:\n")
    entry = json.loads(data[len("File 1:\n") :])
    assert entry == {"name": "sub/t.csv", "size": P.format_size(f.stat().st_size)}
    assert data == "File 1:\n" + json.dumps(entry, indent=4) + "\n\n"
    two = P.build_user_prompt("q", [("a.csv", 2048), ("b.db", "1.0MB")])
    assert 'File 2:\n{\n    "name": "b.db",\n    "size": "1.0MB"\n}' in two
    assert '"size": "2.0KB"' in two


def test_build_user_prompt_without_files_has_no_data_section():
    assert P.build_user_prompt("Say hi", []) == "# Instruction\nSay hi"


def test_build_user_prompt_bad_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        P.build_user_prompt("q", [tmp_path / "missing.csv"])


def test_execute_spans_and_masking():
    spans = P.execute_spans(GOOD)
    assert len(spans) == 1
    s, e = spans[0]
    assert GOOD[s:e] == "<Execute>\n1\n</Execute>"
    chunks = P.split_for_masking(GOOD)
    assert "".join(c for c, _ in chunks) == GOOD
    assert [c for c, trainable in chunks if not trainable] == ["<Execute>\n1\n</Execute>"]


# --- properties -------------------------------------------------------------------------------------------

_pieces = st.sampled_from(P.SPECIAL_TOKENS + ["<", ">", "</", "Code", "\n", " ", "x", "```python\n", "```"])
_noisy = st.lists(st.one_of(_pieces, st.text(max_size=6)), max_size=30).map("".join)


@settings(max_examples=300, deadline=None)
@given(_noisy)
def test_round_trip_on_arbitrary_text(text):
    parsed = P.parse(text)
    assert P.render(parsed) == text
    # segments tile the text
    pos = 0
    for seg in parsed.segments:
        assert seg.start == pos and text[seg.start : seg.end] == seg.raw
        pos = seg.end
    assert pos == len(text)
    P.validate(text)  # never raises


_body = st.text(alphabet=st.characters(blacklist_characters="<>"), max_size=20)


@st.composite
def trajectories(draw):
    parts = [P.wrap("Analyze", draw(_body))]
    for _ in range(draw(st.integers(0, 3))):
        parts.append(P.wrap("Code", draw(_body)))
        parts.append(P.wrap("Execute", draw(st.text(max_size=20).filter(lambda s: "</Execute>" not in s))))
        parts.append(P.wrap(draw(st.sampled_from(["Understand", "Analyze"])), draw(_body)))
    parts.append(P.wrap("Answer", draw(_body)))
    seps = [draw(st.sampled_from(["", "\n", "\n\n", " "])) for _ in parts]
    return "".join(s + p for s, p in zip(seps, parts)), len(parts)


@settings(max_examples=200, deadline=None)
@given(trajectories())
def test_generated_trajectories_are_well_formed(traj):
    text, n_actions = traj
    assert P.render(P.parse(text)) == text
    assert len(P.parse(text).actions) == n_actions
    assert P.validate(text) == []


_DEFECTS = {
    "unclosed_tag": lambda t: t.replace("</Analyze>", "", 1),
    "unexpected_closing_tag": lambda t: t.replace("<Answer>", "</Code><Answer>", 1),
    "text_outside_tags": lambda t: t.replace("<Answer>", "stray words<Answer>", 1),
    "nested_tag": lambda t: t.replace("</Analyze>", "<Understand>u</Understand></Analyze>", 1),
    "missing_answer": lambda t: t[: t.index("<Answer>")],
    "content_after_answer": lambda t: t + "<Analyze>again</Analyze>",
    "not_starting_with_analyze": lambda t: "<Understand>u</Understand>" + t,
}


@settings(max_examples=60, deadline=None)
@given(trajectories(), st.sampled_from(sorted(_DEFECTS)))
def test_validation_finds_each_planted_defect(traj, defect):
    text, _ = traj
    broken = _DEFECTS[defect](text)
    assert defect in _codes(broken)
    assert P.render(P.parse(broken)) == broken
