-- Envoy's first Lua filter: what every request goes through before the
-- rate limit and the transcoder (server/edge/__init__.py tells the order).
--
-- The renderer (server/edge/envoy.py) puts this source into Envoy's config
-- after a preamble of `local` constants, so that the names and limits the
-- server reads are spelled once, in server/edge/constants.py:
--   ROUTES                  each REST path (from the protos' google.api.http
--                           rules) and each path Envoy answers itself, as a
--                           Lua pattern with the methods it takes
--   QUERY_HEADER            a REST call's query string, for the server
--   JSON_BODY_HEADER        a REST call's body, base64-encoded, for the server
--   ANONYMOUS_HEADER        marks a call without a token for the rate limit
--   METADATA_NAMESPACE      where the access log finds what this records

-- The methods a path takes, or nil for a path of none.
local function allowed_methods(path)
  local allowed = nil
  for _, route in ipairs(ROUTES) do
    if string.find(path, route[1]) then
      allowed = allowed and (allowed .. ", " .. route[2]) or route[2]
    end
  end
  return allowed
end

function envoy_on_request(request)
  local headers = request:headers()
  -- One spelling per token ("Bearer <token>"), so that
  -- the per-token rate limit (the next filter) cannot
  -- be dodged with "bearer" or extra spaces.
  local authorization = headers:get("authorization")
  local content_type = headers:get("content-type") or ""
  local grpc = string.find(content_type, "^application/grpc$")
      or string.find(content_type, "^application/grpc[+;]")
  -- A call of the API without a token: it draws on the
  -- budget all such calls share (the next filter).
  local anonymous = authorization == nil
      and (grpc or string.sub(headers:get(":path"), 1, 5) == "/api/")
  -- Most clients spell it so already: left as it is.
  if authorization ~= nil and not string.find(authorization, "^Bearer %S+$") then
    local scheme, token = string.match(authorization, "^%s*(%a+)%s+(%S+)%s*$")
    if scheme ~= nil and string.lower(scheme) == "bearer" then
      headers:replace("authorization", "Bearer " .. token)
    end
  end
  -- Internal headers a client sent, and header names
  -- gRPC metadata does not take, are gone already:
  -- the connection manager's early header mutation
  -- drops them (server/edge/envoy.yaml).
  if anonymous then
    headers:add(ANONYMOUS_HEADER, "1")
  end
  -- For the access log, which reads the method and
  -- path itself: whether the call is gRPC (a request
  -- this filter skipped is REST), and the query's
  -- parameter names without their values, which may
  -- hold search terms.
  local path = headers:get(":path")
  local question = string.find(path, "?", 1, true)
  local route_path = question and string.sub(path, 1, question - 1) or path
  local method = headers:get(":method")
  local query = nil
  if question then
    local names = {}
    for pair in string.gmatch(string.sub(path, question + 1), "[^&]+") do
      table.insert(names, (string.match(pair, "^[^=]*")))
    end
    query = table.concat(names, "&")
  end
  request:streamInfo():dynamicMetadata():set(METADATA_NAMESPACE, "request",
    {query = query, grpc = grpc ~= nil})
  -- A request id from the client is logged and
  -- returned as it is: one that could break a log
  -- line or fill it is refused, and Envoy makes one
  -- for a request without.
  local request_id = headers:get("x-request-id")
  if request_id ~= nil and (#request_id > 200
      or not string.find(request_id, "^[%w._:/+=@-]+$")) then
    headers:remove("x-request-id")
    local problem = "x-request-id: must be 1-200 letters, digits and ._:/+=@-"
      .. " (or left out, and htk makes one)"
    if grpc then
      request:respond({[":status"] = "200", ["content-type"] = "application/grpc",
        ["grpc-status"] = "3", ["grpc-message"] = problem}, "")
    else
      request:respond({[":status"] = "400"}, problem)
    end
    return
  end
  -- Envoy's own test for gRPC (a route answers it on
  -- REST paths); anything else is REST, or the
  -- dashboard's files.
  if grpc then
    return
  end
  local allowed = allowed_methods(route_path)
  if allowed ~= nil and not string.find(", " .. allowed .. ",", ", " .. method .. ",", 1, true) then
    request:respond({[":status"] = "405", ["allow"] = allowed},
      method .. " is not allowed on this path; it takes " .. allowed)
    return
  end
  if string.sub(route_path, 1, 5) ~= "/api/" then
    return
  end
  -- Without a query there is nothing to read: the
  -- server reads no header as an empty query.
  if question then
    headers:add(QUERY_HEADER, string.sub(path, question + 1))
    headers:replace(":path", route_path)
  end
  local body = request:body()
  -- Reading the body invalidates `headers`: fetch them anew.
  if body ~= nil and body:length() > 0 then
    request:headers():add(JSON_BODY_HEADER,
      request:base64Escape(body:getBytes(0, body:length())))
    body:setBytes("")
    request:headers():replace("content-length", "0")
  end
end
