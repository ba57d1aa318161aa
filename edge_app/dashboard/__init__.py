"""Web dashboard of recognized actions and fleet health; Home Assistant discovery."""
