"""`--help` of every pretraining job states each config flag's default (and the demo's where it
differs), and those are the values a run with no flags uses; errors name the flag that was typed."""
from __future__ import annotations

import re
import runpy

import pytest

from physiofm.platform.cli import PLACEHOLDER_CORPUS, flatten, resolve_config, show
from physiofm.platform.config import TrainConfig
from tests.conftest import REPO_ROOT, run_job_main

JOBS = ["pretrain_ecg.py", "pretrain_eeg.py", "pretrain_scmm.py", "pretrain_physiosync.py"]
STATED = re.compile(r"\(default: (?P<default>[^;()]*?)(?:; (?P<demo>[^;()]*?) on the demo corpus)?"
                    r"(?:; [^()]*?)?; config key (?P<key>[a-z_.]+)\)")


def stated_defaults(help_text: str) -> dict[str, tuple[str, str | None]]:
    flat = " ".join(help_text.split())
    return {m["key"]: (m["default"], m["demo"]) for m in STATED.finditer(flat)}


def used(job: dict, argv: list[str]) -> dict:
    """The config the job resolves for `argv` (the run's own resolution), flattened."""
    parser = job["parser"]()
    args = parser.parse_args(argv)
    defaults = job["DEFAULTS"] if "DEFAULTS" in job else job["defaults"]()
    config, _ = resolve_config(parser, args, defaults, job["DEMO"])
    config.setdefault("data", {})["corpus"] = config.get("data", {}).get("corpus") or PLACEHOLDER_CORPUS
    return flatten(TrainConfig.from_dict(config).to_dict())


@pytest.mark.parametrize("script", JOBS)
def test_help_states_every_default_and_it_is_the_one_used(script, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "1000")  # one line per flag: nothing wrapped inside a value
    code, out, _ = run_job_main(script, ["--help"], capsys)
    assert code == 0
    stated = stated_defaults(out)
    job = runpy.run_path(str(REPO_ROOT / "jobs" / script), run_name="job")
    parser = job["parser"]()
    flags = {key for _, key in parser.flag_keys.values()} - {"data.corpus"}
    assert flags <= set(stated), sorted(flags - set(stated))  # every config flag states its default
    demo, given = used(job, []), used(job, ["--corpus", "somewhere"])
    for key, (default, on_demo) in stated.items():
        assert default == show(given[key]), (key, default, given[key])
        assert (on_demo or default) == show(demo[key]), (key, on_demo, demo[key])
    if script == "pretrain_ecg.py":  # the finding: help said 16 while the demo ran 4
        assert stated["data.batch_size"] == ("16", "4")


def test_errors_name_the_flag_typed_and_the_config_key_of_a_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PHYSIOFM_CACHE", str(tmp_path / "cache"))
    code, _, err = run_job_main("pretrain_ecg.py", ["--intra-ratio", "-0.5", "--output", str(tmp_path)], capsys)
    assert code == 2 and "error: --intra-ratio -0.5: method.intra_ratio must be in [0, 1)" in err
    code, _, err = run_job_main("pretrain_eeg.py", ["--mask-ratio", "1.5", "--output", str(tmp_path)], capsys)
    assert code == 2 and "error: --mask-ratio 1.5: method.intra_ratio must be in [0, 1)" in err
    config = tmp_path / "run.yaml"
    config.write_text("method:\n  intra_ratio: 1.5\n")
    code, _, err = run_job_main("pretrain_ecg.py", ["--config", str(config), "--output", str(tmp_path)], capsys)
    assert code == 2 and f"method.intra_ratio must be in [0, 1) (a masking probability), got 1.5 (in --config {config})" in err
    code, _, err = run_job_main("pretrain_ecg.py", ["--corpus", str(tmp_path / "nothing"), "--batch-size", "3"],
                                capsys)
    assert code == 2 and f"--corpus {tmp_path / 'nothing'}: data.corpus: nothing found at" in err
