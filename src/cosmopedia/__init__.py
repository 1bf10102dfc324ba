"""Cosmopedia: build Cosmopedia-style synthetic pre-training datasets.

The `cosmopedia` package holds the logic of every workflow step; the Snakemake rules in
`workflow/` call its command line (`cosmopedia <step> ...`), so each step also runs by hand.
"""

__version__ = "0.1.0"
