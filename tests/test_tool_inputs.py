"""Bad input to tools/model_summary.py and tools/prepare_videos.py: exit status 2 and one
``error:`` line naming the file or flag and the problem, no traceback, nothing written."""

import pytest
from tool_runner import run_tool


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
  root = tmp_path_factory.mktemp("tool_inputs")
  (root / "broken.py").write_text("def get_config(:\n")
  (root / "notes.txt").write_text("not a folder")
  (root / "no videos").mkdir()
  (root / "no videos" / "readme.md").write_text("nothing to see")
  return root


CASES = [  # (tool, arguments, message)
  ("model_summary.py", ["--config={root}/missing.py"], "missing.py"),
  ("model_summary.py", ["--config={root}/broken.py"], "broken.py, line 1"),
  ("model_summary.py", ["--config=configs/synthetic.py:tiny", "--config.model.no_such=3"],
   "--config.model.no_such=3: the config has no field 'no_such'"),
  ("model_summary.py", [], "--config is required"),
  ("prepare_videos.py", ["--input={root}/missing", "--output={root}/out"], "missing: no such folder"),
  ("prepare_videos.py", ["--input={root}/notes.txt", "--output={root}/out"],
   "notes.txt: a file, not a folder of videos"),
  ("prepare_videos.py", ["--input={root}/no videos", "--output={root}/out"], "no videos: no video files"),
]  # fmt: skip


@pytest.mark.parametrize("tool, arguments, message", CASES)
def test_bad_tool_input_is_one_error_line(inputs, tool, arguments, message):
  result = run_tool(tool, *(a.format(root=inputs) for a in arguments))
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 2, result.stderr[-2000:]
  assert lines[-1].startswith("error: ") and message in lines[-1], lines[-3:]
  assert sum(line.startswith("error:") for line in lines) == 1 and "Traceback" not in result.stderr
  assert not (inputs / "out").exists()
