"""``python -m robustbench_wbc`` is ``wbc-robust``."""

if __name__ == "__main__":
    from robustbench_wbc.cli import app

    app(prog_name="wbc-robust")
