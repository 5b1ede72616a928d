"""clipsearch.search"""
