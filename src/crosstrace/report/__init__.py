"""Reporting: statistics (AIE with bootstrap CIs, paired tests, similarity) and figures."""
