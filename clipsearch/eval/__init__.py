"""clipsearch.eval"""
