"""Run folders and what reads them: cards, the runs table, plots, statistics, contact sheets."""
