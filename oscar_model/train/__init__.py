"""Training code for the OSCAR networks (stages 0-2, calibration, index statistics).

The command line is ``python -m jobs.train``; everything here takes config objects.
"""
