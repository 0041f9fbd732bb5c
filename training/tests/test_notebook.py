from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "model_development.ipynb"
CELL_TIMEOUT = 300  # seconds; quick mode needs well under a minute per cell


def test_notebook_runs_top_to_bottom_in_quick_mode(tmp_path, monkeypatch):
    # The kernel inherits the environment: quick mode shrinks data and epochs so every cell runs in seconds.
    monkeypatch.setenv("DIGIT_NOTEBOOK_QUICK", "1")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # Executed in memory from the notebook's own folder (it finds the project from there); the
    # committed file and its full-run outputs stay untouched, the executed copy goes to tmp_path.
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    try:
        client.execute()  # raises CellExecutionError naming the failing cell
    finally:
        nbformat.write(notebook, tmp_path / NOTEBOOK.name)
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    assert any("image/png" in output.get("data", {}) for output in outputs)
