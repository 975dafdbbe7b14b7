"""Small real data for the train tests: records made by the project's agent loop in the real local sandbox.

The policy that writes the turns is a scripted test double; the code in them runs for real, so every Execute
block holds what the sandbox actually printed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import yaml

from doubles import ScriptedChatModel
from synth.agent import AgentConfig, run_agent
from synth.checklist import RuleItem
from synth.sources.ref import source_refs
from synth.dataset.record import Record, RewardSpec, record_id, write_records
from synth.protocol import build_user_prompt
from synth.sandbox import get_sandbox

SALES = "region,amount\nnorth,10\nsouth,20\nnorth,30\n"

CORRECT = [
    "<Analyze>Read the table and sum the amounts.</Analyze>\n<Code>\n```python\nimport pandas as pd\n"
    "df = pd.read_csv('sales.csv')\nprint(df['amount'].sum())\n```\n</Code>",
    "<Understand>The printed total is 60.</Understand>\n<Answer>The total amount is 60.</Answer>",
]
WITH_ERROR = [
    "<Analyze>Sum the column.</Analyze>\n<Code>\n```python\nimport pandas as pd\n"
    "df = pd.read_csv('sales.csv')\nprint(df['amt'].sum())\n```\n</Code>",
    "<Analyze>The column is called amount.</Analyze>\n<Code>\n```python\nimport pandas as pd\n"
    "df = pd.read_csv('sales.csv')\ndf.groupby('region')['amount'].sum().to_csv('by_region.csv')\n"
    "print(open('by_region.csv').read())\n```\n</Code>",
    "<Answer>north has 40 and south 20; written to by_region.csv.</Answer>",
]


def write_sources(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sales.csv").write_text(SALES, encoding="utf-8")
    return folder


async def run_episode(sources: Path, replies: list[str], instruction: str):
    with get_sandbox("local").open([sources / "sales.csv"]) as session:
        return await run_agent(ScriptedChatModel(replies), session, instruction,
                               config=AgentConfig(max_rounds=6, cell_timeout_s=30))


def agent_trajectory(sources: Path, replies: list[str], instruction: str):
    return asyncio.run(run_episode(sources, replies, instruction))


def reasoning_record(question: str, answer: str) -> Record:
    prompt = build_user_prompt(question + "\n| region | amount |\n| north | 10 |\n| south | 20 |")
    text = f"<Analyze>Look at the table rows one by one.</Analyze>\n<Answer>{answer}</Answer>"
    return Record(id=record_id([], question, variant="distilled"), kind="reasoning", category="table_qa",
                  messages=[{"role": "user", "content": prompt}, {"role": "assistant", "content": text}],
                  reference=answer, reward_spec=RewardSpec(method="qa", ground_truth=answer), variant="distilled")


def make_run(root: Path) -> Path:
    """A run directory (records.jsonl + config.yaml) with 2 interaction and 2 reasoning records."""
    sources = write_sources(root / "sources")
    run = root / "run"
    run.mkdir(parents=True, exist_ok=True)
    refs = source_refs([sources / "sales.csv"])
    qa = agent_trajectory(sources, CORRECT, "What is the total amount?")
    task = agent_trajectory(sources, WITH_ERROR, "Write the total amount per region to by_region.csv.")
    records = [
        Record.from_trajectory(qa, category="data_analysis", sources=refs,
                               reference={"value": 60, "verified_by": "program", "program": "print(60)",
                                          "output": "60"},
                               checklist=[RuleItem(id="answered", rule="answer_present")]),
        Record.from_trajectory(task, category="data_preparation", sources=refs,
                               checklist=[RuleItem(id="file", rule="file_created", params={"glob": "by_region.csv"}),
                                          RuleItem(id="answered", rule="answer_present")]),
        reasoning_record("Which region has the larger amount?", "south"),
        reasoning_record("How many rows does the table have?", "2"),
    ]
    write_records(run / "records.jsonl", records)
    (run / "config.yaml").write_text(yaml.safe_dump({"sources": str(sources), "max_rounds": 4}), encoding="utf-8")
    return run
