"""Report: leaderboards (and, later, figures and the HTML report) from the tidy table."""

from robustbench_wbc.report.leaderboard import current_rows, eps_label, leaderboard, to_markdown

__all__ = ["current_rows", "eps_label", "leaderboard", "to_markdown"]
