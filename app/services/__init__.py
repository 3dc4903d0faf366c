"""Decisions over the models' outputs (calibration of the verification threshold, ...): pure logic
the routes and the command-line tools call, never HTTP."""
