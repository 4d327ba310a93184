"""Tests of recsys.evaluation."""
