-- orthanc-onstablestudy.lua — Orthanc Lua hook: when a study becomes stable (no new instance
-- for "StableAge" seconds), run paraspinal on it with scripts/pacs/orthanc-postprocess.sh,
-- which stores a DICOM Segmentation and QC secondary captures back into the same study.
--
-- Install (orthanc.json):  "LuaScripts": [ "/path/to/orthanc-onstablestudy.lua" ],
--                          "StableAge": 60
-- Settings, from the environment of the Orthanc process (e.g. a systemd drop-in
-- "Environment=PSP_POSTPROCESS=..."):
--   PSP_POSTPROCESS  orthanc-postprocess.sh  (default /usr/local/share/paraspinal/orthanc-postprocess.sh)
--   PSP_ORTHANC_URL  this Orthanc's REST API (default http://127.0.0.1:8042)
--   PSP_ORTHANC_AUTH USER:PASS when the REST API needs authentication (default none)
--   PARASPINAL       the paraspinal program (default: paraspinal on the PATH)
--   PSP_LOG          where the script's log lines go
--                    (default /var/log/orthanc/paraspinal-orthanc.log: Debian's Orthanc log folder)
--   PSP_LOCK         lock file that makes analyses run one at a time (default
--                    /var/lib/orthanc/paraspinal-orthanc.lock; the script's --lock). Not in /tmp:
--                    there another user could create it first and stop every analysis.
--
-- The script runs in the background: Orthanc holds its Lua lock during a callback, and every
-- REST request the script makes would wait for that lock (a deadlock if the callback waited
-- for the script). Queued studies wait for PSP_LOCK, so one analysis runs at a time.
-- Studies without MR images and studies whose paraspinal SEG is newer than every MR series
-- (Orthanc's LastUpdate) are skipped, so storing the results (which makes the study unstable
-- and then stable again) does not loop, while MR images that arrive later (a study sent in
-- pieces) have it analysed again; the script then replaces the earlier results. A failed
-- analysis is logged (exit code and message in PSP_LOG) and not retried until new images
-- arrive in the study.

local function setting(name, default)
  local v = os.getenv(name)
  if v == nil or v == '' then return default end
  return v
end

-- single-quoted for /bin/sh
local function sh(s)
  return "'" .. string.gsub(s, "'", "'\\''") .. "'"
end

function OnStableStudy(studyId, tags, metadata)
  if not string.match(studyId, '^[%x%-]+$') then
    print('paraspinal: ignoring unexpected study id')
    return
  end
  local series = ParseJson(RestApiGet('/studies/' .. studyId .. '/series'))
  local mr_last, seg_last = nil, nil -- LastUpdate, YYYYMMDDThhmmss: compared as text
  for _, s in pairs(series) do
    local t = s['MainDicomTags']
    local u = s['LastUpdate'] or ''
    if t['Modality'] == 'SEG' and t['Manufacturer'] == 'paraspinal' then
      if seg_last == nil or u > seg_last then seg_last = u end
    end
    if t['Modality'] == 'MR' then
      if mr_last == nil or u > mr_last then mr_last = u end
    end
  end
  if mr_last == nil then return end
  if seg_last ~= nil and not (mr_last > seg_last) then
    return -- processed, and no MR image arrived since
  end

  local script = setting('PSP_POSTPROCESS', '/usr/local/share/paraspinal/orthanc-postprocess.sh')
  local cmd = sh(script) .. ' --url ' .. sh(setting('PSP_ORTHANC_URL', 'http://127.0.0.1:8042'))
  local auth = setting('PSP_ORTHANC_AUTH', '')
  if auth ~= '' then cmd = cmd .. ' --auth ' .. sh(auth) end
  local program = setting('PARASPINAL', '')
  if program ~= '' then cmd = cmd .. ' --paraspinal ' .. sh(program) end
  cmd = cmd .. ' --lock ' ..
        sh(setting('PSP_LOCK', '/var/lib/orthanc/paraspinal-orthanc.lock')) .. ' ' .. studyId ..
        ' >> ' .. sh(setting('PSP_LOG', '/var/log/orthanc/paraspinal-orthanc.log')) ..
        ' 2>&1 < /dev/null &'
  print('paraspinal: analysing stable study ' .. studyId .. ' in the background')
  os.execute(cmd)
end
