"""The operator's tools: doctor, snapshot, calibrate, monitor, report."""
