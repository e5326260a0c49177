"""Tests of the Plan stage: policy files, conditions, context, planner."""
