/// SFControl: the use cases shared by the command line, the REST API and the agent.
public enum SFControl {}
