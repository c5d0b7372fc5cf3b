"""Report: leaderboards (and, later, figures and the HTML report) from the tidy table."""

from robustbench_wbc.report.leaderboard import eps_label, leaderboard, to_markdown

__all__ = ["eps_label", "leaderboard", "to_markdown"]
