"""clipsearch.cli"""
