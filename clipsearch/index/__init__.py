"""clipsearch.index"""
