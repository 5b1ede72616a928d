"""clipsearch.server"""
