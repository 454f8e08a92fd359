"""Deployment targets: device profiles, the memory model and recommendations."""

from phiquant.devices.profiles import PROFILES, DeviceProfile, get_profile, parse_size

__all__ = ["PROFILES", "DeviceProfile", "get_profile", "parse_size"]
