"""`distill view`: a read-only web page over runs, training data and evaluations.

Records are read as plain JSON, never through the strict pydantic models: the viewer must show
files written by older and newer distills alike (fields such as `verdict`, `sample` or tool
outcomes appear on records as features land), and a record the trainer would refuse is exactly
the one a user wants to look at.
"""
