"""The demo driver's plan: which stages run, what each waits for, and the order."""

from __future__ import annotations

from pathlib import Path

from mirnet_pipeline.tasks.stages import Plan, plan, ready

ROOT = Path(__file__).resolve().parents[1]


def test_a_stale_stage_takes_everything_downstream_and_nothing_upstream(monkeypatch):
    monkeypatch.chdir(ROOT)
    result = plan(["shards"])
    trainings = {s for s in result.commands if s.startswith("train@")}
    evaluations = {s.replace("train@", "evaluate@") for s in trainings}
    assert set(result.commands) == {"shards", "classical", "compare", "enhance", "export@mirnet", *trainings,
                                    *evaluations}
    assert len(trainings) == 7
    assert result.commands["train@mirnet"] == "python -m mirnet_pipeline.flows.train mirnet"
    assert result.needs["shards"] == set()
    assert result.needs["enhance"] == {"shards", "train@mirnet_lol"}  # enhancement uses the LoL model only
    assert result.needs["evaluate@mirnet"] == {"shards", "train@mirnet"}  # one variant's evaluation, its model only
    assert result.needs["classical"] == {"shards"}  # no model: training never runs it again
    assert result.needs["compare"] == {"shards", "classical", *trainings, *evaluations}
    assert result.needs["export@mirnet"] == {"shards", "train@mirnet"}  # waits for the model it exports
    # once the shards exist: trainings first, longest first (mirnet_lol is also what enhance waits for)
    order = ready(result, {"shards"}, {"shards"})
    assert order[0] == "train@mirnet_lol"
    assert set(order) == trainings | {"classical"}  # enhance and the evaluations wait for their models


def test_stages_start_when_what_they_need_is_done_and_what_unblocks_most_goes_first():
    tiny = Plan(commands={s: "true" for s in "abcde"},
                needs={"a": set(), "b": set(), "c": {"a"}, "d": {"a", "b"}, "e": set()},
                rank={"a": (-2,), "b": (-1,), "c": (0,), "d": (0, 1), "e": (0, 2)})
    assert ready(tiny, set(), set()) == ["a", "b", "e"]
    assert ready(tiny, set(), {"a"}) == ["b", "e"]  # started, not done: c still waits
    assert ready(tiny, {"a"}, {"a", "b"}) == ["c", "e"]
    assert ready(tiny, {"a", "b"}, {"a", "b", "c"}) == ["d", "e"]
