"""The agents API under `/agents`, behind the API key: create, read, change (a new version each
time), list versions, delete. How a call uses an agent is in outcall/agents.py."""

from fastapi import APIRouter, Depends, HTTPException, Response
from pydantic import ValidationError

from outcall.agent_store import AgentError, AgentStore
from outcall.agents import AgentCreate, AgentList, AgentProfile, AgentUpdate, AgentVersionList, AgentVersionView, AgentView
from outcall.api_errors import error_responses
from outcall.dependencies import AgentsDep, require_api_key
from outcall.models import Agent, AgentVersion

router = APIRouter(prefix="/agents", tags=["agents"], dependencies=[Depends(require_api_key)],
                   responses=error_responses(400, 401, 404, 409, 503))


def agent_view(agent: Agent) -> AgentView:
    return AgentView(id=agent.id, name=agent.name, version=agent.version, profile=AgentProfile.model_validate(agent.profile),
                     created_at=agent.created_at, updated_at=agent.updated_at)


def version_view(version: AgentVersion) -> AgentVersionView:
    return AgentVersionView(version=version.version, name=version.name, profile=AgentProfile.model_validate(version.profile),
                            created_at=version.created_at)


async def found(action):
    """`await action`, its AgentError as the HTTP error it describes."""
    try:
        return await action
    except AgentError as e:
        raise HTTPException(e.status, e.message)


@router.post("", response_model=AgentView, status_code=201)
async def create_agent(body: AgentCreate, agents: AgentsDep):
    """A new agent, at version 1."""
    return agent_view(await agents.create(body.name, body.profile))


@router.get("", response_model=AgentList)
async def list_agents(agents: AgentsDep):
    return AgentList(agents=[agent_view(a) for a in await agents.all()])


@router.get("/{agent_id}", response_model=AgentView)
async def get_agent(agent_id: str, agents: AgentsDep):
    return agent_view(await found(agents.get(agent_id)))


@router.get("/{agent_id}/versions", response_model=AgentVersionList)
async def list_versions(agent_id: str, agents: AgentsDep):
    """Every version, newest first."""
    await found(agents.get(agent_id))
    return AgentVersionList(versions=[version_view(v) for v in await agents.versions(agent_id)])


@router.get("/{agent_id}/versions/{version}", response_model=AgentVersionView)
async def get_version(agent_id: str, version: int, agents: AgentsDep):
    return version_view(await found(agents.version(agent_id, version)))


@router.patch("/{agent_id}", response_model=AgentView)
async def update_agent(agent_id: str, body: AgentUpdate, agents: AgentsDep):
    """A new version: the fields given replace the current ones; campaigns using the agent dial
    with it from their next call."""
    return agent_view(await change_agent(agents, agent_id, body))


async def change_agent(agents: AgentStore, agent_id: str, body: AgentUpdate) -> Agent:
    """Raises HTTPException: no such agent, or a profile that does not validate (422, the field named)."""
    profile = None
    if body.profile is not None:
        current = (await found(agents.get(agent_id))).profile
        try:
            profile = AgentProfile.model_validate({**current, **body.profile})
        except ValidationError as e:
            raise HTTPException(422, [{**error, "loc": ["body", "profile", *error["loc"]]}
                                      for error in e.errors(include_url=False, include_context=False)])
    return await found(agents.update(agent_id, body.name, profile))


@router.delete("/{agent_id}", status_code=204)
async def delete_agent(agent_id: str, agents: AgentsDep):
    """Delete the agent (its calls keep its id and version); 409 while a running or paused campaign uses it."""
    await found(agents.delete(agent_id))
    return Response(status_code=204)
