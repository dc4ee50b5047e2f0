"""_read/verify"""
