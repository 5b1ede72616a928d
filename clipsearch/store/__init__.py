"""clipsearch.store"""
