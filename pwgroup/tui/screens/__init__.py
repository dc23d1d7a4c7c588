"""The dashboard's screens: the main dashboard, the help screen and small dialogs."""
