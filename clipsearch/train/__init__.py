"""clipsearch.train"""
