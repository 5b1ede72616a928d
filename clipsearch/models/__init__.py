"""clipsearch.models"""
