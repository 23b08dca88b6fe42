"""Agents and their versions: every change a new version, the old ones kept for their calls."""

import uuid

from sqlalchemy import delete, select

from outcall.agents import AgentProfile
from outcall.clock import Clock
from outcall.database import Database, for_update, uninterrupted
from outcall.models import Agent, AgentVersion, Campaign, CampaignStatus

class AgentError(Exception):
    """An agent request that cannot be done; `status` is the HTTP status that says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class AgentStore:
    """All reads and writes of agents."""

    def __init__(self, database: Database, clock: Clock):
        self.database = database
        self.clock = clock

    @uninterrupted
    async def create(self, name: str, profile: AgentProfile) -> Agent:
        now = self.clock.now()
        data = profile.model_dump(mode="json", exclude_none=True)
        agent = Agent(id=str(uuid.uuid4()), name=name, version=1, profile=data, created_at=now, updated_at=now)
        async with self.database.write() as session:
            session.add(agent)
            await session.flush()
            session.add(AgentVersion(agent_id=agent.id, version=1, name=name, profile=data, created_at=now))
        return agent

    @uninterrupted
    async def get(self, agent_id: str) -> Agent:
        async with self.database.session() as session:
            agent = await session.get(Agent, agent_id)
        if agent is None:
            raise AgentError(404, f"No agent with id {agent_id!r}")
        return agent

    @uninterrupted
    async def version(self, agent_id: str, version: int) -> AgentVersion:
        async with self.database.session() as session:
            found = await session.get(AgentVersion, (agent_id, version))
        if found is None:
            raise AgentError(404, f"Agent {agent_id!r} has no version {version}")
        return found

    @uninterrupted
    async def versions(self, agent_id: str) -> list[AgentVersion]:
        query = select(AgentVersion).where(AgentVersion.agent_id == agent_id).order_by(AgentVersion.version.desc())
        async with self.database.session() as session:
            return list((await session.execute(query)).scalars())

    @uninterrupted
    async def all(self) -> list[Agent]:
        async with self.database.session() as session:
            return list((await session.execute(select(Agent).order_by(Agent.name, Agent.id))).scalars())

    @uninterrupted
    async def update(self, agent_id: str, name: str | None, profile: AgentProfile | None) -> Agent:
        """A new version with the name and profile given (the current ones where None)."""
        async with self.database.write() as session:
            agent = (await session.execute(for_update(session, select(Agent).where(Agent.id == agent_id)))).scalar_one_or_none()
            if agent is None:
                raise AgentError(404, f"No agent with id {agent_id!r}")
            agent.version += 1
            agent.name = name or agent.name
            if profile is not None:
                agent.profile = profile.model_dump(mode="json", exclude_none=True)
            agent.updated_at = self.clock.now()
            session.add(AgentVersion(agent_id=agent.id, version=agent.version, name=agent.name, profile=agent.profile,
                                     created_at=agent.updated_at))
            return agent

    @uninterrupted
    async def delete(self, agent_id: str) -> None:
        """Delete the agent and its versions (its calls keep naming them); refused while a running
        or paused campaign uses it."""
        async with self.database.write() as session:
            agent = (await session.execute(for_update(session, select(Agent).where(Agent.id == agent_id)))).scalar_one_or_none()
            if agent is None:
                raise AgentError(404, f"No agent with id {agent_id!r}")
            live = (CampaignStatus.RUNNING.value, CampaignStatus.PAUSED.value)
            campaigns = (await session.execute(select(Campaign).where(Campaign.status.in_(live)))).scalars()
            users = [c.name for c in campaigns if c.settings.get("agent_id") == agent_id]
            if users:
                raise AgentError(409, f"Agent {agent.name!r} is used by the campaign(s) {', '.join(users)}: stop them first")
            await session.execute(delete(AgentVersion).where(AgentVersion.agent_id == agent_id))
            await session.delete(agent)
