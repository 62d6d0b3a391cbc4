"""Stochastic models of the world: AGI timing, revenue, deadlines, randomness.

Pure numerical code; knows nothing about deals, files or Excel.
"""
