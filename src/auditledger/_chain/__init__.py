"""_chain"""
