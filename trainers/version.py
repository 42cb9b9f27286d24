"""The code behaviour version: which results this code gives for given options, weights and data.

Bump ``BEHAVIOUR_VERSION`` in the commit that changes what any run trains or evaluates to (a number in a
log, a checkpoint or an accuracy), and add a line saying what changed to ``CHANGES``; a refactoring that
keeps every number leaves it alone (CONTRIBUTING.md; ``tests/test_provenance.py`` fails on a version
without its line). Every run records the version in its fingerprint: a finished run of another version is
not reused, an interrupted one not resumed.
"""

BEHAVIOUR_VERSION = 1

CHANGES = {
    1: "first recorded version (runs from before it are 'version unknown': reused with a notice, never resumed)",
}
