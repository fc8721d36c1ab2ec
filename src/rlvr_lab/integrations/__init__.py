"""Adapters that run rlvr-lab's objectives inside other training engines (verl, TRL).

Each adapter lives in its own subpackage and imports its engine lazily, so importing
``rlvr_lab`` (or ``rlvr_lab.objectives``) never loads verl, Ray or TRL.
"""
