"""The README's Python examples run as they are written and print what they say."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
@pytest.mark.timeout(60)
def test_readme_example_runs(code, tmp_path, runtime_dir):
    if "numpy" in code:
        pytest.importorskip("numpy")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=50)
    assert out.returncode == 0, out.stderr
    # A "print(...)  # ... b'...'" or "[...]" comment shows what that line prints.
    for comment in re.findall(r"print\(.*\)\s+# ([^\n]+)", code):
        shown = re.search(r"b'[^']*'|\[[^\]]*\]", comment)
        if shown:
            assert shown.group(0) in out.stdout, (shown.group(0), out.stdout)
