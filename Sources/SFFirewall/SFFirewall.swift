import SFSystem
