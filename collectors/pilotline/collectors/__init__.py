"""Collectors: speak the equipment's protocols and turn what arrives into ``Sample``s."""
