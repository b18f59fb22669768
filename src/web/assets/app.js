/*
 * Campus Gateway — the security room's status page.
 *
 * Plain JavaScript, no framework, no build step: the binary embeds this file.
 * The page is watched all day on a wall screen and used from a desk PC, so:
 *   - the live state comes from one Server-Sent Events stream; whenever the
 *     stream (re)connects or says it lagged, everything is fetched again, and
 *     a slow poll backs that up, so the screen never silently goes stale;
 *   - every piece of server data reaches the DOM through textContent or
 *     setAttribute, never innerHTML: alarm messages and device names come from
 *     the field and must not be able to inject markup;
 *   - the CSP forbids inline handlers and styles, so everything is wired here
 *     with addEventListener and styled with classes.
 */
'use strict';

(() => {
  // ---------------------------------------------------------------------
  // Dictionary. Every label on the page comes from here.

  const DICT = {
    zh: {
      'app.title': '校园安全监控',
      'app.subtitle': '保卫处 · Campus Gateway',
      'nav.skip': '跳到报警列表',
      'nav.history': '历史记录',
      'title.critical': '⚠ 紧急报警',
      'title.count': '({n}) ',

      'auth.title': '登录',
      'auth.hint': '校园安全监控 · 保卫处值班',
      'auth.username': '用户名',
      'auth.password': '密码',
      'auth.submit': '登录',
      'auth.signingIn': '正在登录…',
      'auth.signOut': '退出登录',
      'auth.missing': '请输入用户名和密码',
      'auth.expired': '登录已过期，请重新登录',
      'auth.retryIn': '（{n} 分钟后可重试）',
      'role.viewer': '查看',
      'role.operator': '值班员',
      'role.admin': '管理员',

      'conn.lost': '连接中断，正在重新连接…',
      'conn.stale': '新报警可能无法显示。',
      'conn.since': '自 {t} 起',
      'conn.unreachable': '无法连接服务器，稍后自动重试',

      'sound.enable': '启用声音',
      'sound.on': '声音开',
      'sound.muteFor': '静音 {n} 分钟',
      'sound.mutedLeft': '静音中 {t}',
      'sound.toggleOn': '未确认的报警静音 {n} 分钟；到时仍未确认会再次响铃，新报警立即响铃',
      'sound.toggleOff': '点击恢复声音',
      'sound.blocked': '浏览器阻止了报警声音：有新报警时不会响铃。',
      'sound.blockedHow': '点击页面任意位置即可启用（每次刷新后都需要）。值班墙屏请这样启动浏览器，无需点击：',
      'sound.none': '此浏览器不能播放声音：新报警不会响铃，请使用 Chromium 或 Chrome。',

      'banner.new': '新报警',
      'banner.more': '另有 {n} 条未确认',
      'banner.open': '查看',
      'banner.dismiss': '关闭提示',
      'banner.when': '{t}（{ago}）',

      'alarms.title': '当前报警',
      'alarms.none': '当前没有报警',
      'alarms.unacked': '未确认',
      'alarms.updated': '更新于 {t}',
      'quiet.title': '已搁置 / 演练屏蔽',
      'quiet.none': '无搁置或屏蔽的报警',

      'sev.critical': '紧急',
      'sev.high': '高',
      'sev.medium': '中',
      'sev.low': '低',
      'sevShort.critical': '紧急',
      'sevShort.high': '高',
      'sevShort.medium': '中',
      'sevShort.low': '低',

      'state.unacked': '未确认',
      'state.acked': '已确认',
      'state.cleared_unacked': '已恢复 · 未确认',
      'state.cleared': '已恢复',
      'state.shelved': '已搁置',

      'kind.smoke': '烟感',
      'kind.gate': '门禁',
      'kind.kitchen': '厨房排烟',
      'kind.labcab': '危化品柜',
      'kind.bus': '校车',
      'kindShort.smoke': '烟感',
      'kindShort.gate': '门禁',
      'kindShort.kitchen': '排烟罩',
      'kindShort.labcab': '危化柜',
      'kindShort.bus': '校车',

      'row.raisedAt': '发生 {t}',
      'row.activeFor': '持续',
      'row.clearedAfter': '已恢复，持续',
      'row.ackedBy': '{user} 于 {t} 确认',
      'row.count': '触发 {n} 次',
      'row.covers': '含同设备报警：{names}',
      'row.peak': '峰值 {v}',
      'row.value': '数值 {v}',
      'row.group': '成组报警',
      'row.groupMembers': '{n} 条',
      'row.shelvedUntil': '搁置至 {t}',
      'row.remaining': '剩余',
      'row.reason': '原因：{r}',
      'row.suppressed': '演练/维护期间：{r}',
      'row.expand': '展开 {n} 条',
      'row.collapse': '收起',
      'row.details': '查看详情',
      'row.device': '设备 {d}',
      'row.first': '首警',
      'row.firstHint': '本次事件最先发生的报警（未确认的最高级别报警中最早的一条）',
      'row.undeclared': '未登记',
      'row.undeclaredHint': '配置中没有这台设备：位置未知，可能是伪造的消息',
      'row.site': '校区 {s}',

      'action.ack': '确认',
      'action.shelve': '搁置',
      'action.unshelve': '取消搁置',
      'action.comment': '备注',
      'action.end': '结束',

      'ack.title': '确认报警',
      'ack.comment': '备注（可选）',
      'ack.confirm': '确认报警',
      'shelve.title': '搁置报警',
      'shelve.explain': '搁置期间该报警不再提醒，到时自动恢复。',
      'shelve.minutes': '搁置时长',
      'shelve.reason': '原因（必填）',
      'shelve.confirm': '搁置',
      'shelve.needReason': '请填写搁置原因',
      'comment.title': '添加备注',
      'comment.text': '备注内容',
      'comment.confirm': '保存备注',
      'comment.needText': '请填写备注内容',
      'common.cancel': '取消',
      'common.close': '关闭',
      'common.saving': '正在提交…',
      'common.none': '—',
      'common.more': '另有 {n} 项未显示',

      'drill.start': '开始演练/维护',
      'drill.title': '演练 / 维护屏蔽',
      'drill.explain': '区域内新产生的报警会记录，但放入安静区，不响铃。',
      'drill.building': '楼栋',
      'drill.floor': '楼层',
      'drill.minutes': '时长',
      'drill.reason': '原因（必填）',
      'drill.confirm': '开始屏蔽',
      'drill.needBuilding': '请选择楼栋',
      'drill.wholeBuilding': '整栋',
      'drill.noBuildings': '没有设备登记了楼栋',
      'drill.needReason': '请填写原因',
      'drill.zone': '{b} 楼',
      'drill.zoneFloor': '{b} 楼 {f} 层',
      'drill.until': '至 {t}',
      'drill.by': '{u} 设置',
      'drill.started': '已开始屏蔽',
      'drill.ended': '已结束屏蔽',

      'minutes.n': '{n} 分钟',
      'hours.n': '{n} 小时',

      'dur.lt1': '不到1分钟',
      'dur.m': '{m}分钟',
      'dur.hm': '{h}小时{m}分',
      'dur.dh': '{d}天{h}小时',
      'ago.now': '刚刚',
      'ago.s': '{n}秒前',
      'ago.x': '{d}前',
      'ago.never': '从未上报',

      'devices.title': '设备状态',
      'devices.online': '在线',
      'devices.offline': '离线设备',
      'devices.offlineN': '{n} 离线',
      'devices.allOnline': '全部在线',
      'devices.noDevices': '无设备',
      'devices.lowBattery': '低电量烟感',
      'devices.noneOffline': '没有离线设备',
      'devices.noneLow': '没有低电量设备',
      'devices.lastSeen': '最后上报 {t}',
      'devices.battery': '电量 {n}%',
      'devices.undeclared': '未登记设备',
      'devices.noneUndeclared': '没有未登记的设备',

      'buses.title': '校车',
      'buses.none': '暂无校车数据',
      'buses.noPosition': '暂无位置数据',
      'buses.speed': '{v} km/h',
      'buses.passengers': '{n} 人',
      'buses.doorOpen': '车门开',
      'buses.doorClosed': '车门关',
      'buses.offline': '离线',
      'buses.route': '线路 {r}',
      'buses.noRoute': '无线路',
      'buses.position': '位置',
      'comp.ok': '正常',
      'comp.off_route': '偏离路线',
      'comp.speeding': '超速',
      'comp.overloaded': '超载',
      'comp.none': '无合规数据',
      'map.north': '北',
      'map.km': '{n} 公里',
      'map.m': '{n} 米',

      'history.title': '历史报警',
      'history.from': '开始日期',
      'history.to': '结束日期',
      'history.severity': '级别',
      'history.kind': '类型',
      'history.state': '状态',
      'history.text': '关键词',
      'history.textPlaceholder': '位置、设备、内容、确认人…',
      'history.search': '查询',
      'history.ledger': '下载台账 CSV',
      'history.all': '全部',
      'history.clearedOnly': '已结束',
      'history.allStates': '全部（含未结束）',
      'history.badRange': '开始日期不能晚于结束日期',
      'history.loading': '正在查询…',
      'history.count': '共 {n} 条',
      'history.countOf': '显示 {n} 条（共取回 {total} 条）',
      'history.limit': '只取回了最近的 {n} 条；请缩小日期范围。',
      'history.empty': '该范围内没有符合条件的报警',

      'col.severity': '级别',
      'col.raised': '发生时间',
      'col.cleared': '恢复时间',
      'col.duration': '持续',
      'col.kind': '类型',
      'col.location': '位置',
      'col.message': '内容',
      'col.acked': '确认',
      'col.state': '状态',

      'detail.title': '报警详情',
      'detail.events': '处理记录',
      'detail.loading': '正在加载…',
      'detail.noEvents': '无记录',
      'f.message': '内容',
      'f.severity': '级别',
      'f.state': '状态',
      'f.location': '位置',
      'f.kind': '类型',
      'f.device': '设备',
      'f.rule': '规则',
      'f.site': '校区',
      'f.raised': '发生',
      'f.cleared': '恢复',
      'f.acked': '确认',
      'f.value': '数值 / 峰值',
      'f.count': '次数',
      'f.shelved': '搁置',
      'f.suppressed': '演练/维护',
      'f.group': '所属成组',
      'f.declared': '登记',
      'ev.raise': '报警',
      'ev.repeat': '再次触发',
      'ev.clear': '恢复正常',
      'ev.ack': '确认',
      'ev.shelve': '搁置',
      'ev.unshelve': '取消搁置',
      'ev.comment': '备注',
      'ev.group': '成组',

      'err.network': '无法连接服务器',
      'err.http': '请求失败（{status}）',
      // A code that names nothing specific keeps the server's words after it.
      'err.bad_request': '请求无效：{detail}',
      'err.bad_json': '请求格式错误：{detail}',
      'err.bad_query': '查询条件无效：{detail}',
      'err.bad_alarm_id': '报警编号无效',
      'err.bad_state': '查询的状态无效',
      'err.bad_range': '开始时间必须早于结束时间',
      'err.bad_token_id': '令牌编号无效',
      'err.credentials_too_long': '用户名或密码过长',
      'err.unauthorized': '请先登录',
      'err.login_failed': '用户名或密码错误',
      'err.forbidden': '没有权限执行此操作',
      'err.not_found': '未找到：{detail}',
      'err.alarm_not_found': '该报警已结束或不存在',
      'err.conflict': '当前状态不允许此操作：{detail}',
      'err.not_allowed': '该报警现在是“{state}”，不能{action}',
      'err.slow_down': '登录尝试过多，请 {n} 秒后再试',
      'err.limit': '连接过多，请稍后再试',
      'err.internal': '服务器内部错误，请稍后再试',
      'err.unavailable': '服务暂时不可用，请稍后再试',
      'err.invalid_command': '无法执行此操作：{detail}',
      'err.invalid_minutes': '时长不在允许范围内',
      'err.comment_too_long': '备注最多 2000 字',
      'err.reason_too_long': '原因最多 2000 字',
      'err.comment_required': '请填写备注内容',
      'err.reason_required': '请填写原因',
      'err.building_required': '请选择楼栋',
      'err.unknown_building': '没有设备登记在这个楼栋，请从列表中选择',
      'err.unknown_floor': '这个楼栋没有设备在该楼层，请从列表中选择',
      'err.invalid_file': '配置文件有错误，未重新加载：{detail}',
      'verb.ack': '确认',
      'verb.shelve': '搁置',
      'verb.unshelve': '取消搁置',
      'verb.comment': '备注',
      'verb.clear': '恢复',
      'ok.ack': '已确认',
      'ok.shelve': '已搁置',
      'ok.unshelve': '已取消搁置',
      'ok.comment': '备注已保存',
    },

    en: {
      'app.title': 'Campus Safety Monitor',
      'app.subtitle': 'Security office · Campus Gateway',
      'nav.skip': 'Skip to the alarm list',
      'nav.history': 'History',
      'title.critical': '⚠ CRITICAL ALARM',
      'title.count': '({n}) ',

      'auth.title': 'Sign in',
      'auth.hint': 'Campus safety monitor · security office',
      'auth.username': 'User name',
      'auth.password': 'Password',
      'auth.submit': 'Sign in',
      'auth.signingIn': 'Signing in…',
      'auth.signOut': 'Sign out',
      'auth.missing': 'Enter your user name and password',
      'auth.expired': 'Your session has ended; please sign in again',
      'auth.retryIn': ' (try again in {n} min)',
      'role.viewer': 'Viewer',
      'role.operator': 'Operator',
      'role.admin': 'Admin',

      'conn.lost': 'Connection lost — reconnecting…',
      'conn.stale': 'New alarms may not be shown.',
      'conn.since': 'since {t}',
      'conn.unreachable': 'Cannot reach the server; retrying',

      'sound.enable': 'Enable sound',
      'sound.on': 'Sound on',
      'sound.muteFor': 'Mute {n} min',
      'sound.mutedLeft': 'Muted {t}',
      'sound.toggleOn': 'Silences unacknowledged alarms for {n} min; they sound again if still unacknowledged, a new alarm sounds at once',
      'sound.toggleOff': 'Click to turn sound back on',
      'sound.blocked': 'The browser is blocking the alarm sound: a new alarm will not be heard.',
      'sound.blockedHow': 'Click anywhere on the page to allow it (needed after every reload). On the wall screen, start the browser like this and no click is needed:',
      'sound.none': 'This browser cannot play sound: new alarms will not be heard. Use Chromium or Chrome.',

      'banner.new': 'New alarm',
      'banner.more': '{n} more unacknowledged',
      'banner.open': 'Open',
      'banner.dismiss': 'Dismiss',
      'banner.when': '{t} ({ago})',

      'alarms.title': 'Active alarms',
      'alarms.none': 'No active alarms',
      'alarms.unacked': 'Unacked',
      'alarms.updated': 'Updated {t}',
      'quiet.title': 'Shelved / drill-suppressed',
      'quiet.none': 'No shelved or suppressed alarms',

      'sev.critical': 'Critical',
      'sev.high': 'High',
      'sev.medium': 'Medium',
      'sev.low': 'Low',
      'sevShort.critical': 'CRIT',
      'sevShort.high': 'HIGH',
      'sevShort.medium': 'MED',
      'sevShort.low': 'LOW',

      'state.unacked': 'Unacknowledged',
      'state.acked': 'Acknowledged',
      'state.cleared_unacked': 'Cleared · unacknowledged',
      'state.cleared': 'Cleared',
      'state.shelved': 'Shelved',

      'kind.smoke': 'Smoke detector',
      'kind.gate': 'Gate',
      'kind.kitchen': 'Kitchen hood',
      'kind.labcab': 'Chemical cabinet',
      'kind.bus': 'School bus',
      'kindShort.smoke': 'Smoke',
      'kindShort.gate': 'Gate',
      'kindShort.kitchen': 'Hood',
      'kindShort.labcab': 'Cabinet',
      'kindShort.bus': 'Bus',

      'row.raisedAt': 'raised {t}',
      'row.activeFor': 'Active for',
      'row.clearedAfter': 'Cleared after',
      'row.ackedBy': 'acked by {user} at {t}',
      'row.count': 'tripped {n}×',
      'row.covers': 'also on this device: {names}',
      'row.peak': 'peak {v}',
      'row.value': 'value {v}',
      'row.group': 'Flood group',
      'row.groupMembers': '{n} alarms',
      'row.shelvedUntil': 'shelved until {t}',
      'row.remaining': 'Left',
      'row.reason': 'reason: {r}',
      'row.suppressed': 'during drill/maintenance: {r}',
      'row.expand': 'Show {n}',
      'row.collapse': 'Hide',
      'row.details': 'Show details',
      'row.device': 'device {d}',
      'row.first': 'First alarm',
      'row.firstHint': 'The alarm that started this incident: the earliest of the unacknowledged alarms of the highest severity',
      'row.undeclared': 'Undeclared',
      'row.undeclaredHint': 'This device is not in the configuration: its place is unknown and the message may be spoofed',
      'row.site': 'site {s}',

      'action.ack': 'Ack',
      'action.shelve': 'Shelve',
      'action.unshelve': 'Unshelve',
      'action.comment': 'Comment',
      'action.end': 'End',

      'ack.title': 'Acknowledge alarm',
      'ack.comment': 'Comment (optional)',
      'ack.confirm': 'Acknowledge',
      'shelve.title': 'Shelve alarm',
      'shelve.explain': 'A shelved alarm stays quiet until the time runs out.',
      'shelve.minutes': 'For',
      'shelve.reason': 'Reason (required)',
      'shelve.confirm': 'Shelve',
      'shelve.needReason': 'Say why the alarm is shelved',
      'comment.title': 'Add a comment',
      'comment.text': 'Comment',
      'comment.confirm': 'Save comment',
      'comment.needText': 'Write the comment first',
      'common.cancel': 'Cancel',
      'common.close': 'Close',
      'common.saving': 'Sending…',
      'common.none': '—',
      'common.more': '{n} more not shown',

      'drill.start': 'Start drill / maintenance',
      'drill.title': 'Drill / maintenance zone',
      'drill.explain': 'Alarms raised in the zone are recorded but kept in the quiet section, without sound.',
      'drill.building': 'Building',
      'drill.floor': 'Floor',
      'drill.minutes': 'For',
      'drill.reason': 'Reason (required)',
      'drill.confirm': 'Start',
      'drill.needBuilding': 'Choose the building',
      'drill.wholeBuilding': 'whole building',
      'drill.noBuildings': 'No device has a building',
      'drill.needReason': 'Enter a reason',
      'drill.zone': 'Building {b}',
      'drill.zoneFloor': 'Building {b}, floor {f}',
      'drill.until': 'until {t}',
      'drill.by': 'set by {u}',
      'drill.started': 'Zone suppressed',
      'drill.ended': 'Suppression ended',

      'minutes.n': '{n} min',
      'hours.n': '{n} h',

      'dur.lt1': '<1 min',
      'dur.m': '{m} min',
      'dur.hm': '{h} h {m} min',
      'dur.dh': '{d} d {h} h',
      'ago.now': 'just now',
      'ago.s': '{n} s ago',
      'ago.x': '{d} ago',
      'ago.never': 'never seen',

      'devices.title': 'Devices',
      'devices.online': 'online',
      'devices.offline': 'Offline devices',
      'devices.offlineN': '{n} offline',
      'devices.allOnline': 'all online',
      'devices.noDevices': 'none',
      'devices.lowBattery': 'Low battery (smoke)',
      'devices.noneOffline': 'No device is offline',
      'devices.noneLow': 'No battery is low',
      'devices.lastSeen': 'last seen {t}',
      'devices.battery': 'battery {n}%',
      'devices.undeclared': 'Undeclared devices',
      'devices.noneUndeclared': 'No undeclared device',

      'buses.title': 'School buses',
      'buses.none': 'No bus data yet',
      'buses.noPosition': 'No position yet',
      'buses.speed': '{v} km/h',
      'buses.passengers': '{n} aboard',
      'buses.doorOpen': 'door open',
      'buses.doorClosed': 'door closed',
      'buses.offline': 'offline',
      'buses.route': 'route {r}',
      'buses.noRoute': 'no route',
      'buses.position': 'Position',
      'comp.ok': 'OK',
      'comp.off_route': 'Off route',
      'comp.speeding': 'Speeding',
      'comp.overloaded': 'Overloaded',
      'comp.none': 'No compliance data',
      'map.north': 'N',
      'map.km': '{n} km',
      'map.m': '{n} m',

      'history.title': 'Alarm history',
      'history.from': 'From',
      'history.to': 'To',
      'history.severity': 'Severity',
      'history.kind': 'Kind',
      'history.state': 'State',
      'history.text': 'Search',
      'history.textPlaceholder': 'place, device, message, who…',
      'history.search': 'Search',
      'history.ledger': 'Download ledger CSV',
      'history.all': 'All',
      'history.clearedOnly': 'Cleared',
      'history.allStates': 'All (incl. open)',
      'history.badRange': 'The start date must not be after the end date',
      'history.loading': 'Searching…',
      'history.count': '{n} alarms',
      'history.countOf': '{n} shown ({total} fetched)',
      'history.limit': 'Only the newest {n} were fetched; narrow the date range.',
      'history.empty': 'No alarm in this range matches',

      'col.severity': 'Severity',
      'col.raised': 'Raised',
      'col.cleared': 'Cleared',
      'col.duration': 'Duration',
      'col.kind': 'Kind',
      'col.location': 'Location',
      'col.message': 'Message',
      'col.acked': 'Acknowledged',
      'col.state': 'State',

      'detail.title': 'Alarm details',
      'detail.events': 'What happened',
      'detail.loading': 'Loading…',
      'detail.noEvents': 'No entries',
      'f.message': 'Message',
      'f.severity': 'Severity',
      'f.state': 'State',
      'f.location': 'Location',
      'f.kind': 'Kind',
      'f.device': 'Device',
      'f.rule': 'Rule',
      'f.site': 'Site',
      'f.raised': 'Raised',
      'f.cleared': 'Cleared',
      'f.acked': 'Acknowledged',
      'f.value': 'Value / peak',
      'f.count': 'Count',
      'f.shelved': 'Shelved',
      'f.suppressed': 'Drill / maintenance',
      'f.group': 'Flood group',
      'f.declared': 'Declared',
      'ev.raise': 'Raised',
      'ev.repeat': 'Tripped again',
      'ev.clear': 'Back to normal',
      'ev.ack': 'Acknowledged',
      'ev.shelve': 'Shelved',
      'ev.unshelve': 'Unshelved',
      'ev.comment': 'Comment',
      'ev.group': 'Grouped',

      'err.network': 'Cannot reach the server',
      'err.http': 'Request failed ({status})',
      // Codes whose server text is already the best English say {detail}.
      'err.bad_request': '{detail}',
      'err.bad_json': '{detail}',
      'err.bad_query': '{detail}',
      'err.bad_alarm_id': 'Not an alarm id',
      'err.bad_state': '{detail}',
      'err.bad_range': 'The start must be before the end',
      'err.bad_token_id': 'Not a token id',
      'err.credentials_too_long': 'User name or password too long',
      'err.unauthorized': 'Sign in first',
      'err.login_failed': 'Wrong user name or password',
      'err.forbidden': 'You are not allowed to do this',
      'err.not_found': '{detail}',
      'err.alarm_not_found': 'This alarm is over or does not exist',
      'err.conflict': '{detail}',
      'err.not_allowed': 'The alarm is {state} now: you cannot {action} it',
      'err.slow_down': 'Too many sign-in attempts; try again in {n} s',
      'err.limit': 'Too many connections; try again shortly',
      'err.internal': 'Internal server error; try again shortly',
      'err.unavailable': 'The service is unavailable; try again shortly',
      'err.invalid_command': '{detail}',
      'err.invalid_minutes': 'That duration is not allowed',
      'err.comment_too_long': 'A comment may have at most 2000 characters',
      'err.reason_too_long': 'A reason may have at most 2000 characters',
      'err.comment_required': 'Write the comment first',
      'err.reason_required': 'Give a reason',
      'err.building_required': 'Choose the building',
      'err.unknown_building': 'No device is in that building; choose one from the list',
      'err.unknown_floor': 'No device of that building is on that floor; choose one from the list',
      'err.invalid_file': 'The configuration file has problems; nothing was reloaded',
      'verb.ack': 'acknowledge',
      'verb.shelve': 'shelve',
      'verb.unshelve': 'unshelve',
      'verb.comment': 'comment on',
      'verb.clear': 'clear',
      'ok.ack': 'Acknowledged',
      'ok.shelve': 'Shelved',
      'ok.unshelve': 'Unshelved',
      'ok.comment': 'Comment saved',
    },
  };

  const SEVERITIES = ['critical', 'high', 'medium', 'low'];
  const KINDS = ['smoke', 'gate', 'kitchen', 'labcab', 'bus'];
  const SHELVE_MINUTES = [15, 30, 60, 240, 480];
  const DRILL_MINUTES = [30, 60, 120, 240, 480];
  const LOW_BATTERY_PCT = 20;
  const LIST_CAP = 40; // offline / low-battery rows shown before "N more"

  const LANG_KEY = 'campusgw.lang';
  // Until when the sound is muted (epoch ms): a mute always ends by itself.
  const MUTE_KEY = 'campusgw.mutedUntil';

  // localStorage can throw (disabled storage, some kiosk modes): never let
  // that stop the page.
  const store = {
    get(key) {
      try { return window.localStorage.getItem(key); } catch { return null; }
    },
    set(key, value) {
      try { window.localStorage.setItem(key, value); } catch { /* not remembered */ }
    },
  };

  let lang = pickLanguage();

  function pickLanguage() {
    const saved = store.get(LANG_KEY);
    if (saved === 'zh' || saved === 'en') return saved;
    const nav = (navigator.languages && navigator.languages[0]) || navigator.language || '';
    return nav.toLowerCase().startsWith('zh') ? 'zh' : 'en';
  }

  /** The label for `key`, with `{name}` placeholders filled from `vars`. */
  function t(key, vars) {
    let text = DICT[lang][key];
    if (text === undefined) text = DICT.en[key];
    if (text === undefined) return key;
    if (vars) text = text.replace(/\{(\w+)\}/g, (m, name) => (vars[name] === undefined ? m : String(vars[name])));
    return text;
  }

  /** Fills the static labels of index.html (data-i18n*) in the current language. */
  function applyStaticLabels() {
    document.documentElement.lang = lang === 'zh' ? 'zh-CN' : 'en';
    for (const el of document.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
    for (const el of document.querySelectorAll('[data-i18n-placeholder]')) {
      el.setAttribute('placeholder', t(el.dataset.i18nPlaceholder));
    }
    for (const opt of document.querySelectorAll('#lang-switch .lang-opt')) {
      opt.classList.toggle('current', opt.dataset.lang === lang);
    }
    $('lang-switch').setAttribute('aria-label', lang === 'zh' ? 'Switch to English' : '切换到中文');
    fillSelects();
    updateMuteButton();
    updateTitle();
  }

  function setLanguage(next) {
    lang = next;
    store.set(LANG_KEY, next);
    applyStaticLabels();
    renderAll();
  }

  // ---------------------------------------------------------------------
  // DOM helpers. Children are nodes or strings (strings become text nodes).

  const $ = (id) => document.getElementById(id);

  function h(tag, props, ...children) {
    const el = document.createElement(tag);
    setProps(el, props);
    append(el, children);
    return el;
  }

  const SVG_NS = 'http://www.w3.org/2000/svg';

  function svg(tag, props, ...children) {
    const el = document.createElementNS(SVG_NS, tag);
    setProps(el, props);
    append(el, children);
    return el;
  }

  function setProps(el, props) {
    if (!props) return;
    for (const [k, v] of Object.entries(props)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') el.setAttribute('class', v);
      else if (k === 'text') el.textContent = v;
      else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
  }

  function append(el, children) {
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false || c === '') continue;
      el.append(c instanceof Node ? c : String(c));
    }
  }

  function clear(el) {
    while (el.firstChild) el.firstChild.remove();
  }

  /** Makes `list`'s children exactly `wanted`, in order, moving rather than rebuilding. */
  function reconcile(list, wanted) {
    wanted.forEach((el, i) => {
      if (list.children[i] !== el) list.insertBefore(el, list.children[i] || null);
    });
    while (list.children.length > wanted.length) list.lastElementChild.remove();
  }

  // ---------------------------------------------------------------------
  // Formatting. Times are shown in the browser's local time (the campus's).

  const pad2 = (n) => String(n).padStart(2, '0');

  function ms(iso) {
    if (!iso) return null;
    const v = Date.parse(iso);
    return Number.isNaN(v) ? null : v;
  }

  function sameDay(a, b) {
    return a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() && a.getDate() === b.getDate();
  }

  /** "14:03" today, "11-28 14:03" on other days. */
  function fmtTime(v) {
    if (v === null || v === undefined) return t('common.none');
    const d = new Date(v);
    const hm = `${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
    return sameDay(d, new Date()) ? hm : `${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${hm}`;
  }

  /** "2025-11-28 14:03:22". */
  function fmtDateTime(v) {
    if (v === null || v === undefined) return t('common.none');
    const d = new Date(v);
    return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ` +
      `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
  }

  function fmtClock(d) {
    return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
  }

  /** A span of time in words: "12 min" / "12分钟". */
  function fmtDuration(span) {
    if (span === null || span === undefined || !Number.isFinite(span)) return t('common.none');
    const min = Math.floor(Math.max(0, span) / 60000);
    if (min < 1) return t('dur.lt1');
    if (min < 60) return t('dur.m', { m: min });
    const hours = Math.floor(min / 60);
    if (hours < 24) return t('dur.hm', { h: hours, m: min % 60 });
    return t('dur.dh', { d: Math.floor(hours / 24), h: hours % 24 });
  }

  /** "just now", "45 s ago", "12 min ago". */
  function fmtAgo(v) {
    if (v === null || v === undefined) return t('ago.never');
    const span = Date.now() - v;
    if (span < 10000) return t('ago.now');
    if (span < 60000) return t('ago.s', { n: Math.floor(span / 1000) });
    return t('ago.x', { d: fmtDuration(span) });
  }

  function fmtNum(v) {
    if (typeof v !== 'number' || !Number.isFinite(v)) return t('common.none');
    return Number.isInteger(v) ? String(v) : String(Math.round(v * 100) / 100);
  }

  function fmtMinutes(n) {
    return n >= 60 && n % 60 === 0 ? t('hours.n', { n: n / 60 }) : t('minutes.n', { n });
  }

  /** A place from its parts, for when the server gave no words for it. */
  function composePlace(building, floor, room) {
    const parts = [];
    if (lang === 'zh') {
      if (building) parts.push(`${building}楼`);
      if (floor) parts.push(`${floor}层`);
      if (room) parts.push(`${room}室`);
      return parts.join(' ');
    }
    if (building) parts.push(`Building ${building}`);
    if (floor) parts.push(`floor ${floor}`);
    if (room) parts.push(`room ${room}`);
    return parts.join(', ');
  }

  function alarmPlace(a) {
    return a.location || composePlace(a.building, a.floor, a.room) || (a.device && a.device !== '*' ? a.device : '') || a.site || t('common.none');
  }

  function devicePlace(d) {
    const loc = d.location;
    if (!loc) return '';
    return loc.name || composePlace(loc.building, loc.floor, loc.room);
  }

  const kindLabel = (k) => (KINDS.includes(k) ? t(`kind.${k}`) : k || t('common.none'));
  const kindShort = (k) => (KINDS.includes(k) ? t(`kindShort.${k}`) : k || t('common.none'));
  const sevLabel = (v) => (SEVERITIES.includes(v) ? t(`sev.${v}`) : v);
  const stateLabel = (v) => t(`state.${v}`);
  const sevRank = (v) => { const i = SEVERITIES.indexOf(v); return i < 0 ? SEVERITIES.length : i; };

  /**
   * What needs a person first: unacknowledged active alarms, then
   * acknowledged active ones (being handled), then cleared ones still
   * waiting for acknowledgement (over, but nobody has seen them).
   */
  function stateRank(a) {
    switch (a.state) {
      case 'unacked': return 0;
      case 'acked': return 1;
      case 'cleared_unacked': return 2;
      default: return 3;
    }
  }

  /** By state (above), then critical first, then newest first. */
  function byUrgency(a, b) {
    return stateRank(a) - stateRank(b) || sevRank(a.severity) - sevRank(b.severity) ||
      (ms(b.raised_at) || 0) - (ms(a.raised_at) || 0) || b.id - a.id;
  }

  /** The alarm's text in the page's language, the single-language text otherwise. */
  const alarmText = (a) => a.messages?.[lang] || a.message || alarmName(a);
  /** The rule's name in the page's language, its id otherwise. */
  const alarmName = (a) => a.names?.[lang] || a.rule;

  /**
   * A device that is not in the configuration: its place is unknown and its
   * messages may be spoofed. The alarm says so itself (`declared`); for an
   * alarm without the field the device list answers. Unknown is not marked.
   */
  function isUndeclared(a) {
    if (a.declared === false) return true;
    if (a.declared !== undefined || !a.device || a.device === '*') return false;
    const d = state.deviceIndex.get(`${a.site}/${a.device}`);
    return !!d && d.declared === false;
  }

  /** Top-level alarms with the members of flood groups in place of the groups that list them. */
  function flatAlarms(list) {
    const out = [];
    for (const a of list) {
      if (a.is_group && Array.isArray(a.members) && a.members.length) out.push(...a.members);
      else out.push(a);
    }
    return out;
  }

  // Severity icons: a different shape per severity, so colour is never the
  // only cue (colour-blind staff, a washed-out wall screen).
  function sevIcon(sev) {
    const icon = svg('svg', { class: 'sev-icon', viewBox: '0 0 24 24', 'aria-hidden': 'true' });
    const mark = (d) => svg('path', { class: 'sev-mark', d });
    switch (sev) {
      case 'critical':
        icon.append(svg('path', { class: 'sev-shape', d: 'M8 1.5h8l6.5 6.5v8L16 22.5H8L1.5 16V8z' }), mark('M12 6.5v7M12 16.8v.4'));
        break;
      case 'high':
        icon.append(svg('path', { class: 'sev-shape', d: 'M12 1.8 23 21.5H1z' }), mark('M12 8.5v6M12 17.6v.4'));
        break;
      case 'medium':
        icon.append(svg('path', { class: 'sev-shape', d: 'M12 1.5 22.5 12 12 22.5 1.5 12z' }), mark('M12 7.5v5.5M12 15.8v.4'));
        break;
      default:
        icon.append(svg('circle', { class: 'sev-shape', cx: 12, cy: 12, r: 10.5 }), mark('M12 10.5v6.5M12 7.2v.4'));
    }
    return icon;
  }

  function sevBadge(sev, { short = true } = {}) {
    return h('span', { class: `sev-badge sev-${sev}`, title: sevLabel(sev) },
      sevIcon(sev), h('span', { class: 'sev-text', text: short ? t(`sevShort.${sev}`) : sevLabel(sev) }));
  }

  // ---------------------------------------------------------------------
  // State.

  const state = {
    me: null,
    active: [],          // top-level open alarms; groups carry `members`
    activeLoaded: false,
    activeAt: null,
    suppressions: [],
    devices: [],
    deviceCounts: null,  // the server's per-kind counts (used while the list is empty)
    devicesAt: null,
    deviceIndex: new Map(), // "site/id" -> device, for the marks on alarm rows
    buses: [],
    routes: [],
    busesAt: null,
    history: [],
    historyFetched: 0,
    historyLimit: 200,
    expanded: new Set(), // flood groups opened by the user
    lastState: new Map(), // alarm id -> state at the last look (new-critical detection)
    connected: true,
    lostSince: null,
    sessionLost: false, // signed out by the server, not by the user: sounds like a lost connection
  };

  const canAct = () => !!state.me && (state.me.role === 'operator' || state.me.role === 'admin');

  // ---------------------------------------------------------------------
  // API.

  class ApiError extends Error {
    constructor(status, message, data) {
      super(message);
      this.status = status;
      this.data = data;
    }
  }

  /**
   * Same-origin JSON call. POSTs carry the CSRF token; a 401 outside sign-in
   * means the session has ended, so the sign-in form comes back.
   */
  async function api(path, { method = 'GET', body } = {}) {
    const opts = { method, credentials: 'same-origin', headers: { Accept: 'application/json' }, cache: 'no-store' };
    if (method !== 'GET') {
      opts.headers['Content-Type'] = 'application/json';
      if (state.me && state.me.csrf) opts.headers['X-CSRF-Token'] = state.me.csrf;
      opts.body = JSON.stringify(body === undefined ? {} : body);
    }
    let res;
    try {
      res = await fetch(path, opts);
    } catch {
      throw new ApiError(0, t('err.network'));
    }
    const text = res.status === 204 ? '' : await res.text();
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch { data = null; }
    }
    if (!res.ok) {
      const message = errorText(data, res.status);
      if (res.status === 401 && path !== '/api/login' && path !== '/api/me' && state.me) sessionLost();
      throw new ApiError(res.status, message, data);
    }
    return data;
  }

  /**
   * An error body in the page's language: its stable `code` translated, the
   * server's English `error` for a code this page does not know yet.
   */
  function errorText(data, status) {
    const detail = (data && typeof data.error === 'string' && data.error) || '';
    const code = data && typeof data.code === 'string' ? data.code : '';
    const key = `err.${code}`;
    if (!code || (DICT[lang][key] === undefined && DICT.en[key] === undefined)) {
      return detail || t('err.http', { status });
    }
    const vars = { detail: detail || code };
    if (code === 'not_allowed') {
      vars.action = DICT.en[`verb.${data.action}`] ? t(`verb.${data.action}`) : String(data.action || '');
      vars.state = DICT.en[`state.${data.state}`] ? stateLabel(data.state) : String(data.state || '');
    }
    if (code === 'slow_down') vars.n = Math.max(1, Math.ceil(Number(data.retry_after_s) || 1));
    return t(key, vars);
  }

  // ---------------------------------------------------------------------
  // Toasts: short confirmations and errors of user actions.

  function toast(message, kind = 'error') {
    const el = h('div', { class: `toast toast-${kind}`, role: kind === 'error' ? 'alert' : 'status', 'data-testid': 'toast' }, message);
    $('toasts').append(el);
    setTimeout(() => el.classList.add('leaving'), kind === 'error' ? 7000 : 3500);
    setTimeout(() => el.remove(), kind === 'error' ? 7600 : 4100);
  }

  // ---------------------------------------------------------------------
  // Session: sign-in, sign-out, the signed-in frame.

  async function boot() {
    applyStaticLabels();
    wireControls();
    startClock();
    initSound();
    try {
      const me = await api('/api/me');
      showApp(me);
    } catch (err) {
      if (err.status === 401) {
        showLogin();
      } else {
        // Server unreachable or failing: say so and try again shortly.
        showLogin(t('conn.unreachable'));
        setTimeout(retryBoot, 5000);
      }
    }
  }

  async function retryBoot() {
    if (state.me) return;
    try {
      showApp(await api('/api/me'));
    } catch (err) {
      if (err.status === 401) showLoginError(null);
      else setTimeout(retryBoot, 5000);
    }
  }

  function showLogin(message) {
    state.me = null;
    stopStream();
    document.body.classList.add('signed-out');
    document.body.classList.remove('signed-in', 'can-act');
    $('app').hidden = true;
    $('login-view').hidden = false;
    setConnected(true);
    resetData();
    showLoginError(message || null);
    updateTitle();
    renderBanner();
    updateSoundNotice();
    $('login-password').value = '';
    (($('login-username').value ? $('login-password') : $('login-username'))).focus();
  }

  function showLoginError(message) {
    const el = $('login-error');
    el.textContent = message || '';
    el.hidden = !message;
  }

  function resetData() {
    state.active = [];
    state.activeLoaded = false;
    state.suppressions = [];
    state.devices = [];
    state.deviceIndex = new Map();
    state.buses = [];
    state.routes = [];
    state.history = [];
    state.expanded.clear();
    state.lastState.clear();
    rowCache.clear();
  }

  function showApp(me) {
    state.me = me;
    state.sessionLost = false;
    document.body.classList.remove('signed-out');
    document.body.classList.add('signed-in');
    document.body.classList.toggle('can-act', canAct());
    $('login-view').hidden = true;
    $('app').hidden = false;
    $('user-name').textContent = me.user;
    $('user-role').textContent = t(`role.${me.role}`);
    $('user-role').dataset.role = me.role;
    for (const el of document.querySelectorAll('.only-operator')) el.hidden = !canAct();
    renderAll();
    refreshAll();
    connectStream();
    loadHistory();
  }

  function sessionLost() {
    showLogin(t('auth.expired'));
    // Nobody sees alarms on the sign-in form: that sounds until someone signs in.
    state.sessionLost = true;
    updateSoundNotice();
    annunciate();
  }

  async function onLoginSubmit(ev) {
    ev.preventDefault();
    const username = $('login-username').value.trim();
    const password = $('login-password').value;
    if (!username || !password) {
      showLoginError(t('auth.missing'));
      return;
    }
    const button = $('login-submit');
    button.disabled = true;
    button.textContent = t('auth.signingIn');
    try {
      const me = await api('/api/login', { method: 'POST', body: { username, password } });
      $('login-password').value = '';
      showLoginError(null);
      showApp(me);
    } catch (err) {
      let message = err.message;
      // The translated 429 names the wait; a server text without it gets it added.
      if (err.status === 429 && err.data && err.data.retry_after_s && !/\d/.test(message)) {
        message += t('auth.retryIn', { n: Math.ceil(err.data.retry_after_s / 60) });
      }
      showLoginError(message);
      $('login-password').select();
    } finally {
      button.disabled = false;
      button.textContent = t('auth.submit');
    }
  }

  async function onLogout() {
    try {
      await api('/api/logout', { method: 'POST', body: {} });
    } catch (err) {
      if (err.status !== 401) { toast(err.message); return; }
    }
    $('login-username').value = '';
    state.sessionLost = false;
    showLogin();
  }

  // ---------------------------------------------------------------------
  // Fetching. Each refresher swallows network errors: the banner already
  // says the connection is down, and the next reconnect fetches again.

  function refreshAll() {
    refreshActive();
    refreshSuppressions();
    refreshDevices();
    refreshBuses();
  }

  let activeInFlight = false;
  let activeAgain = false;

  async function refreshActive() {
    if (!state.me) return;
    if (activeInFlight) { activeAgain = true; return; }
    activeInFlight = true;
    try {
      const data = await api('/api/alarms?state=active');
      if (!state.me) return;
      const list = Array.isArray(data && data.alarms) ? data.alarms : [];
      const initial = !state.activeLoaded;
      state.active = list;
      state.activeLoaded = true;
      state.activeAt = Date.now();
      noticeNewAlarms(list, { silent: initial, prune: true });
      renderAlarms();
    } catch { /* shown by the banner; retried on reconnect or poll */ }
    finally {
      activeInFlight = false;
      lastActiveFetch = Date.now();
      if (activeAgain) { activeAgain = false; scheduleActiveRefetch(); }
    }
  }

  // Alarm events can come in bursts (a flood): refetch at most four times a
  // second, and always once more after the last event.
  let activeTimer = null;
  let lastActiveFetch = 0;

  function scheduleActiveRefetch() {
    if (activeTimer) return;
    const wait = Math.max(0, lastActiveFetch + 250 - Date.now());
    activeTimer = setTimeout(() => { activeTimer = null; refreshActive(); }, wait);
  }

  async function refreshSuppressions() {
    if (!state.me) return;
    try {
      const data = await api('/api/suppressions');
      state.suppressions = Array.isArray(data && data.suppressions) ? data.suppressions : [];
      renderSuppressions();
    } catch { /* retried later */ }
  }

  async function refreshDevices() {
    if (!state.me) return;
    try {
      const data = await api('/api/devices');
      state.devices = Array.isArray(data && data.devices) ? data.devices : [];
      state.deviceIndex = new Map(state.devices.map((d) => [`${d.site}/${d.id}`, d]));
      state.deviceCounts = (data && data.counts) || null;
      state.devicesAt = Date.now();
      renderDevices();
      // The marks of alarms from undeclared devices may have changed.
      if (state.activeLoaded) renderAlarms();
    } catch { /* retried later */ }
  }

  async function refreshBuses() {
    if (!state.me) return;
    try {
      const data = await api('/api/buses');
      state.buses = Array.isArray(data && data.buses) ? data.buses : [];
      state.routes = Array.isArray(data && data.routes) ? data.routes : [];
      state.busesAt = Date.now();
      renderBuses();
    } catch { /* retried later */ }
  }

  // ---------------------------------------------------------------------
  // Alarm list.

  const isQuiet = (a) => a.state === 'shelved' || !!a.suppressed;
  const needsAck = (a) => a.state === 'unacked' || a.state === 'cleared_unacked';

  // Rows are kept by key and rebuilt only when their alarm changed, so an
  // update elsewhere in the list does not pull a button from under a click.
  const rowCache = new Map(); // key -> { el, sig }

  function cachedRow(key, alarm, extra, build) {
    const sig = JSON.stringify([alarm, extra, lang, canAct()]);
    const hit = rowCache.get(key);
    if (hit && hit.sig === sig) return hit.el;
    const el = build();
    if (hit && hit.el.contains(document.activeElement)) {
      // Keep keyboard focus on the same control of the rebuilt row.
      const id = document.activeElement.getAttribute('data-testid');
      hit.el.replaceWith(el);
      const again = id && el.querySelector(`[data-testid="${id}"]`);
      if (again) again.focus();
    }
    rowCache.set(key, { el, sig });
    return el;
  }

  /**
   * 首警, the first alarm of the current incident. The incident is what is
   * burning and not yet handled: the unacknowledged, active, unsuppressed
   * alarms of the highest severity among them; its first alarm is the
   * earliest raised of those (a fire's first detector is where it started).
   * The severity keeps last week's low battery from being pinned above a
   * fire; an old unacknowledged alarm of that severity does count: until
   * someone acknowledges it, the incident it began is not handled. Members of
   * flood groups count, group rows do not (they have no place of their own).
   */
  function firstAlarm(main) {
    const burning = flatAlarms(main).filter((a) => !isQuiet(a) && !a.is_group && a.state === 'unacked' && a.active !== false);
    if (!burning.length) return null;
    const top = Math.min(...burning.map((a) => sevRank(a.severity)));
    return burning.filter((a) => sevRank(a.severity) === top)
      .sort((a, b) => (ms(a.raised_at) || 0) - (ms(b.raised_at) || 0) || a.id - b.id)[0];
  }

  function renderAlarms() {
    const main = state.active.filter((a) => !isQuiet(a)).sort(byUrgency);
    const quiet = state.active.filter(isQuiet).sort(byUrgency);
    const seen = new Set();

    const rows = [];
    // The first alarm leads the list; a member of a flood group is shown
    // there on its own as well as inside its group.
    const first = firstAlarm(main);
    if (first) {
      const key = `f:${first.id}`;
      seen.add(key);
      rows.push(cachedRow(key, first, ['first', isUndeclared(first)], () => alarmRow(first, { first: true, member: first.group != null })));
    }
    for (const a of main) {
      if (first && a.id === first.id) continue;
      const open = state.expanded.has(a.id);
      const key = `a:${a.id}`;
      seen.add(key);
      rows.push(cachedRow(key, a, [open, isUndeclared(a)], () => alarmRow(a, { open })));
      if (a.is_group && open) {
        const mkey = `g:${a.id}`;
        seen.add(mkey);
        rows.push(cachedRow(mkey, a.members || [], (a.members || []).map(isUndeclared), () => groupMembers(a)));
      }
    }
    reconcile($('alarm-list'), rows);
    $('alarm-empty').hidden = !state.activeLoaded || main.length > 0;
    $('alarm-count').textContent = state.activeLoaded ? String(main.length) : '';

    const quietRows = quiet.map((a) => {
      const key = `q:${a.id}`;
      seen.add(key);
      return cachedRow(key, a, isUndeclared(a), () => alarmRow(a, { quiet: true }));
    });
    reconcile($('quiet-list'), quietRows);
    $('quiet-count').textContent = quiet.length ? String(quiet.length) : '';
    $('quiet-empty').hidden = quiet.length > 0 || state.suppressions.length > 0;

    for (const key of rowCache.keys()) if (!seen.has(key)) rowCache.delete(key);
    for (const id of state.expanded) if (!state.active.some((a) => a.id === id)) state.expanded.delete(id);

    $('alarms-updated').textContent = state.activeAt ? t('alarms.updated', { t: fmtClock(new Date(state.activeAt)) }) : '';
    renderSummary(main);
    updateTitle();
    renderBanner();
    annunciate();
  }

  /** One alarm as a list row; `member` rows sit inside an opened flood group. */
  function alarmRow(a, { open = false, quiet = false, member = false, first = false } = {}) {
    const classes = ['alarm-row', `sev-${a.severity}`, `state-${a.state}`];
    if (!a.active) classes.push('inactive');
    if (a.is_group) classes.push('is-group');
    if (quiet) classes.push('quiet-row');
    if (member && !first) classes.push('member-row');
    if (first) classes.push('first-alarm');

    const raised = ms(a.raised_at);
    const meta = [
      ...placeParts(a),
      h('span', { class: 'kind-tag' }, kindLabel(a.kind)),
    ];
    if (first && a.group != null) meta.push(h('span', { class: 'group-tag' }, `${t('f.group')} #${a.group}`));
    if (a.is_group) {
      meta.push(h('span', { class: 'group-tag' }, `${t('row.group')} · ${t('row.groupMembers', { n: a.count || (a.members || []).length })}`));
    } else if (a.device && a.device !== '*') {
      meta.push(h('span', { class: 'meta-device' }, a.device));
    }
    meta.push(h('span', { class: 'meta-time' }, t('row.raisedAt', { t: fmtTime(raised) })));
    if (!a.is_group && a.count > 1) meta.push(h('span', { class: 'meta-count' }, t('row.count', { n: a.count })));
    // Alarms of the same event on this device (`inhibits`): one row, their names in it.
    if (Array.isArray(a.covers) && a.covers.length) {
      meta.push(h('span', { class: 'meta-covers', 'data-testid': 'alarm-covers' }, t('row.covers', { names: a.covers.map(alarmName).join('、') })));
    }
    if (typeof a.peak === 'number' && a.peak !== a.value) meta.push(h('span', null, t('row.peak', { v: fmtNum(a.peak) })));
    if (a.acked_by) meta.push(h('span', { class: 'meta-acked' }, t('row.ackedBy', { user: a.acked_by, t: fmtTime(ms(a.acked_at)) })));
    if (a.state === 'shelved') {
      meta.push(h('span', { class: 'meta-shelved' }, t('row.shelvedUntil', { t: fmtTime(ms(a.shelved_until)) })));
      if (a.shelve_reason) meta.push(h('span', { class: 'meta-reason' }, t('row.reason', { r: a.shelve_reason })));
    }
    if (a.suppressed) meta.push(h('span', { class: 'meta-suppressed' }, t('row.suppressed', { r: a.suppressed })));

    const main = h('button', {
      type: 'button', class: 'row-main', 'data-testid': 'alarm-open', title: t('row.details'),
      onclick: () => openDetail(a.id),
    },
    first ? h('span', { class: 'first-tag', 'data-testid': 'first-alarm-tag', title: t('row.firstHint') }, t('row.first')) : null,
    h('span', { class: 'row-message', 'data-testid': 'alarm-message' }, alarmText(a)),
    h('span', { class: 'row-meta' }, meta));

    // How long: live while active; frozen at the clearing time once cleared;
    // the time left for a shelved alarm.
    let status;
    if (a.state === 'shelved' && a.shelved_until) {
      status = [h('span', { class: 'dur-label' }, t('row.remaining')),
        h('span', { class: 'duration js-remaining', 'data-until': ms(a.shelved_until), 'data-testid': 'alarm-duration' }, fmtDuration(ms(a.shelved_until) - Date.now()))];
    } else {
      const cleared = a.active ? null : ms(a.cleared_at);
      status = [h('span', { class: 'dur-label' }, t(cleared ? 'row.clearedAfter' : 'row.activeFor')),
        h('span', {
          class: 'duration js-duration', 'data-testid': 'alarm-duration',
          'data-from': raised === null ? null : raised, 'data-to': cleared,
        }, raised === null ? t('common.none') : fmtDuration((cleared || Date.now()) - raised))];
    }
    status.push(h('span', { class: `state-chip chip-${a.state}`, 'data-testid': 'alarm-state' }, stateLabel(a.state)));

    const actions = h('div', { class: 'row-actions' });
    if (a.is_group) {
      // A flood group opens and closes under its text, for viewers too.
      const n = a.count || (a.members || []).length;
      actions.append(h('button', {
        type: 'button', class: 'button subtle group-toggle', 'data-testid': 'group-toggle',
        'aria-expanded': open ? 'true' : 'false',
        onclick: () => toggleGroup(a.id),
      }, h('span', { class: 'caret', 'aria-hidden': 'true' }), open ? t('row.collapse') : t('row.expand', { n })));
    }
    if (canAct()) {
      if (needsAck(a)) {
        actions.append(h('button', { type: 'button', class: 'button primary', 'data-testid': 'ack-button', onclick: () => openAck(a) }, t('action.ack')));
      }
      if (a.state === 'shelved') {
        actions.append(h('button', { type: 'button', class: 'button', 'data-testid': 'unshelve-button', onclick: () => doUnshelve(a) }, t('action.unshelve')));
      } else if (!member) {
        actions.append(h('button', { type: 'button', class: 'button', 'data-testid': 'shelve-button', onclick: () => openShelve(a) }, t('action.shelve')));
      }
      actions.append(h('button', { type: 'button', class: 'button', 'data-testid': 'comment-button', onclick: () => openComment(a) }, t('action.comment')));
    }

    return h('li', {
      class: classes.join(' '),
      'data-testid': 'alarm-row',
      'data-alarm-id': a.id,
      'data-state': a.state,
      'data-severity': a.severity,
      'data-kind': a.kind,
      'data-active': a.active ? 'true' : 'false',
      'data-group': a.is_group ? 'true' : null,
      'data-member-of': member ? a.group : null,
      'data-first': first ? 'true' : null,
      'data-site': a.site || null,
      'data-undeclared': isUndeclared(a) ? 'true' : null,
    },
    sevBadge(a.severity),
    main,
    h('div', { class: 'row-status' }, status),
    actions);
  }

  /**
   * Where: the place in words, the site (a message under another school's
   * code must not pass for ours), and 未登记 for a device not in the
   * configuration.
   */
  function placeParts(a) {
    const parts = [h('span', { class: 'meta-place' }, h('span', { class: 'pin', 'aria-hidden': 'true' }), alarmPlace(a))];
    if (a.site) parts.push(h('span', { class: 'site-tag', 'data-testid': 'alarm-site', title: t('f.site') }, a.site));
    if (isUndeclared(a)) {
      parts.push(h('span', { class: 'undeclared-tag', 'data-testid': 'undeclared-tag', title: t('row.undeclaredHint') }, `⚠ ${t('row.undeclared')}`));
    }
    return parts;
  }

  /** The opened members of a flood group, as a list item after the group's row. */
  function groupMembers(group) {
    const members = (group.members || []).slice().sort(byUrgency);
    return h('li', { class: 'group-members', 'data-testid': 'group-members', 'data-group-id': group.id },
      h('ol', { class: 'member-list' }, members.map((m) => alarmRow(m, { member: true }))));
  }

  function toggleGroup(id) {
    if (state.expanded.has(id)) state.expanded.delete(id);
    else state.expanded.add(id);
    renderAlarms();
  }

  /** Severity counters in the top bar, read from across the room. */
  function renderSummary(main) {
    const box = $('summary');
    clear(box);
    if (!state.activeLoaded) return;
    for (const sev of SEVERITIES) {
      const n = main.filter((a) => a.severity === sev).length;
      box.append(h('span', { class: `sum-item sev-${sev}${n ? '' : ' zero'}`, 'data-testid': `summary-${sev}`, title: sevLabel(sev) },
        sevIcon(sev), h('span', { class: 'sum-label' }, t(`sevShort.${sev}`)), h('b', null, String(n))));
    }
    const unacked = main.filter(needsAck).length;
    box.append(h('span', { class: `sum-item sum-unacked${unacked ? '' : ' zero'}`, 'data-testid': 'summary-unacked' },
      h('span', { class: 'sum-label' }, t('alarms.unacked')), h('b', null, String(unacked))));
  }

  /** Drill and maintenance zones now in force. */
  function renderSuppressions() {
    const list = $('suppression-list');
    clear(list);
    for (const z of state.suppressions) {
      const zone = z.floor ? t('drill.zoneFloor', { b: z.building, f: z.floor }) : t('drill.zone', { b: z.building });
      const until = ms(z.until);
      const item = h('li', { class: 'zone-item', 'data-testid': 'suppression-item', 'data-building': z.building, 'data-floor': z.floor || '' },
        h('span', { class: 'zone-icon', 'aria-hidden': 'true' }),
        h('span', { class: 'zone-name' }, zone),
        h('span', { class: 'zone-until' }, `${t('drill.until', { t: fmtTime(until) })} · `,
          h('span', { class: 'js-remaining', 'data-until': until }, fmtDuration(until - Date.now()))),
        z.reason ? h('span', { class: 'zone-reason' }, z.reason) : null,
        z.by ? h('span', { class: 'zone-by muted' }, t('drill.by', { u: z.by })) : null);
      if (canAct()) {
        item.append(h('button', {
          type: 'button', class: 'button subtle small', 'data-testid': 'end-suppression-button',
          onclick: () => endSuppression(z),
        }, t('action.end')));
      }
      list.append(item);
    }
    const quietCount = state.active.filter(isQuiet).length;
    $('quiet-empty').hidden = quietCount > 0 || state.suppressions.length > 0;
  }

  /** Applies alarms the server says changed (action answers, stream events). */
  function mergeAlarms(changed) {
    for (const c of changed) {
      // Covered by another alarm of the same device: kept in that one's row.
      const cover = c.inhibited_by != null ? state.active.find((a) => a.id === c.inhibited_by) : null;
      if (cover) {
        const covers = (cover.covers = cover.covers || []);
        const i = covers.findIndex((m) => m.id === c.id);
        if (c.state === 'cleared') { if (i >= 0) covers.splice(i, 1); }
        else if (i >= 0) covers[i] = c;
        else covers.push(c);
        const at = state.active.findIndex((a) => a.id === c.id);
        if (at >= 0) state.active.splice(at, 1);
        continue;
      }
      const top = state.active.findIndex((a) => a.id === c.id);
      if (top >= 0) {
        // Cleared alarms leave the list; one just folded into a flood group
        // reappears inside it with the refetch that follows every change.
        if (c.state === 'cleared' || (c.group !== null && c.group !== undefined)) state.active.splice(top, 1);
        else state.active[top] = { ...c, members: c.members || state.active[top].members, covers: c.covers || state.active[top].covers };
        continue;
      }
      if (c.group !== null && c.group !== undefined) {
        const g = state.active.find((a) => a.id === c.group);
        if (g && Array.isArray(g.members)) {
          const i = g.members.findIndex((m) => m.id === c.id);
          if (c.state === 'cleared') { if (i >= 0) g.members.splice(i, 1); }
          else if (i >= 0) g.members[i] = c;
          else g.members.push(c);
        }
        continue;
      }
      if (c.state !== 'cleared') state.active.push(c.is_group && !c.members ? { ...c, members: [] } : c);
    }
    // Members too: an alarm joining a flood group is announced like any new one.
    noticeNewAlarms(changed, { silent: !state.activeLoaded });
    renderAlarms();
  }

  // ---------------------------------------------------------------------
  // Actions and their dialogs.

  function summaryLine(a) {
    return `${sevLabel(a.severity)} · ${alarmText(a)} · ${alarmPlace(a)} · ${a.site || ''}`;
  }

  /**
   * Opens `dialog` for alarm `a`: fills its summary line, clears its error,
   * and wires its form once to `submit(form) -> Promise`.
   */
  function openDialog(dialog, a) {
    const line = dialog.querySelector('[data-role="alarm-summary"]');
    if (line) {
      line.textContent = a ? summaryLine(a) : '';
      line.className = `dialog-alarm${a ? ` sev-${a.severity}` : ''}`;
    }
    setDialogError(dialog, null);
    dialog.showModal();
  }

  function setDialogError(dialog, message) {
    const el = dialog.querySelector('[data-role="error"]');
    if (!el) return;
    el.textContent = message || '';
    el.hidden = !message;
  }

  /** Runs a dialog's submit: button busy, server error shown in the dialog. */
  async function submitDialog(dialog, work) {
    const button = dialog.querySelector('button[type="submit"]');
    const label = button.textContent;
    button.disabled = true;
    button.textContent = t('common.saving');
    try {
      await work();
      dialog.close();
    } catch (err) {
      setDialogError(dialog, err.message);
    } finally {
      button.disabled = false;
      button.textContent = label;
    }
  }

  let dialogAlarm = null; // the alarm the open action dialog is about

  function openAck(a) {
    dialogAlarm = a;
    $('ack-comment').value = '';
    openDialog($('ack-dialog'), a);
    // Enter on the primary button acknowledges at once; the comment is optional.
    $('ack-dialog').querySelector('button[type="submit"]').focus();
  }

  function openShelve(a) {
    dialogAlarm = a;
    $('shelve-minutes').value = '30';
    $('shelve-reason').value = '';
    openDialog($('shelve-dialog'), a);
    $('shelve-reason').focus();
  }

  function openComment(a) {
    dialogAlarm = a;
    $('comment-text').value = '';
    openDialog($('comment-dialog'), a);
    $('comment-text').focus();
  }

  async function alarmAction(a, verb, body) {
    const data = await api(`/api/alarms/${encodeURIComponent(a.id)}/${verb}`, { method: 'POST', body });
    if (data && Array.isArray(data.alarms)) mergeAlarms(data.alarms);
    scheduleActiveRefetch();
  }

  function onAckSubmit(ev) {
    ev.preventDefault();
    const a = dialogAlarm;
    const comment = $('ack-comment').value.trim();
    submitDialog($('ack-dialog'), async () => {
      await alarmAction(a, 'ack', { comment: comment || null });
      toast(t('ok.ack'), 'ok');
    });
  }

  function onShelveSubmit(ev) {
    ev.preventDefault();
    const a = dialogAlarm;
    const reason = $('shelve-reason').value.trim();
    if (!reason) {
      setDialogError($('shelve-dialog'), t('shelve.needReason'));
      $('shelve-reason').focus();
      return;
    }
    const minutes = Number($('shelve-minutes').value);
    submitDialog($('shelve-dialog'), async () => {
      await alarmAction(a, 'shelve', { minutes, reason });
      toast(t('ok.shelve'), 'ok');
    });
  }

  function onCommentSubmit(ev) {
    ev.preventDefault();
    const a = dialogAlarm;
    const text = $('comment-text').value.trim();
    if (!text) {
      setDialogError($('comment-dialog'), t('comment.needText'));
      $('comment-text').focus();
      return;
    }
    submitDialog($('comment-dialog'), async () => {
      await alarmAction(a, 'comment', { text });
      toast(t('ok.comment'), 'ok');
    });
  }

  async function doUnshelve(a) {
    try {
      await alarmAction(a, 'unshelve', {});
      toast(t('ok.unshelve'), 'ok');
    } catch (err) {
      toast(err.message);
    }
  }

  let drillBuildings = []; // [{ building, floors }] from the last look

  async function openDrill() {
    $('drill-minutes').value = '60';
    $('drill-reason').value = '';
    fillDrillBuildings();
    openDialog($('drill-dialog'), null);
    $('drill-building').focus();
    try {
      const data = await api('/api/buildings');
      drillBuildings = Array.isArray(data && data.buildings) ? data.buildings : [];
      fillDrillBuildings();
    } catch (err) {
      setDialogError($('drill-dialog'), err.message);
    }
  }

  function fillDrillBuildings() {
    const select = $('drill-building');
    const keep = select.value;
    clear(select);
    if (!drillBuildings.length) select.append(h('option', { value: '' }, t('drill.noBuildings')));
    for (const b of drillBuildings) select.append(h('option', { value: b.building }, b.building));
    if (drillBuildings.some((b) => b.building === keep)) select.value = keep;
    fillDrillFloors();
  }

  function fillDrillFloors() {
    const select = $('drill-floor');
    const b = drillBuildings.find((x) => x.building === $('drill-building').value);
    clear(select);
    select.append(h('option', { value: '' }, t('drill.wholeBuilding')));
    for (const f of (b && Array.isArray(b.floors) ? b.floors : [])) select.append(h('option', { value: f }, f));
  }

  function onDrillSubmit(ev) {
    ev.preventDefault();
    const dialog = $('drill-dialog');
    const building = $('drill-building').value.trim();
    const floor = $('drill-floor').value.trim();
    const reason = $('drill-reason').value.trim();
    if (!building) { setDialogError(dialog, t('drill.needBuilding')); $('drill-building').focus(); return; }
    if (!reason) { setDialogError(dialog, t('drill.needReason')); $('drill-reason').focus(); return; }
    const minutes = Number($('drill-minutes').value);
    submitDialog(dialog, async () => {
      await api('/api/suppressions', { method: 'POST', body: { building, floor: floor || null, minutes, reason } });
      toast(t('drill.started'), 'ok');
      refreshSuppressions();
      scheduleActiveRefetch();
    });
  }

  async function endSuppression(z) {
    try {
      await api('/api/suppressions/end', { method: 'POST', body: { building: z.building, floor: z.floor || null } });
      toast(t('drill.ended'), 'ok');
      refreshSuppressions();
      scheduleActiveRefetch();
    } catch (err) {
      toast(err.message);
    }
  }

  /** The alarm's full record and its ledger entries. */
  async function openDetail(id) {
    const dialog = $('detail-dialog');
    const body = $('detail-body');
    const events = $('detail-events');
    clear(body);
    clear(events);
    body.append(h('p', { class: 'muted' }, t('detail.loading')));
    if (!dialog.open) dialog.showModal();
    let data;
    try {
      data = await api(`/api/alarms/${encodeURIComponent(id)}`);
    } catch (err) {
      clear(body);
      body.append(h('p', { class: 'form-error' }, err.message));
      return;
    }
    const a = data.alarm;
    clear(body);
    const rows = [
      ['f.message', alarmText(a)],
      ['f.severity', sevBadge(a.severity, { short: false })],
      ['f.state', h('span', { class: `state-chip chip-${a.state}` }, stateLabel(a.state))],
      ['f.location', alarmPlace(a)],
      ['f.kind', kindLabel(a.kind)],
      ['f.device', a.device === '*' ? null : a.device],
      ['f.rule', alarmName(a) === a.rule ? a.rule : `${alarmName(a)} (${a.rule})`],
      ['f.site', a.site],
      ['f.declared', isUndeclared(a) ? h('span', { class: 'undeclared-tag' }, `⚠ ${t('row.undeclared')} · ${t('row.undeclaredHint')}`) : null],
      ['f.raised', fmtDateTime(ms(a.raised_at))],
      ['f.cleared', a.cleared_at ? fmtDateTime(ms(a.cleared_at)) : null],
      ['f.acked', a.acked_by ? `${a.acked_by} · ${fmtDateTime(ms(a.acked_at))}` : null],
      ['f.value', typeof a.value === 'number' || typeof a.peak === 'number' ? `${fmtNum(a.value)} / ${fmtNum(a.peak)}` : null],
      ['f.count', a.count > 1 ? String(a.count) : null],
      ['f.shelved', a.state === 'shelved' ? `${fmtDateTime(ms(a.shelved_until))} · ${a.shelve_reason || ''}` : null],
      ['f.suppressed', a.suppressed],
      ['f.group', a.group !== null && a.group !== undefined ? `#${a.group}` : null],
    ];
    const dl = h('dl', { class: 'detail-grid' });
    for (const [key, value] of rows) {
      if (value === null || value === undefined || value === '') continue;
      dl.append(h('dt', null, t(key)), h('dd', null, value));
    }
    body.append(dl);
    const list = Array.isArray(data.events) ? data.events : [];
    if (!list.length) events.append(h('li', { class: 'muted' }, t('detail.noEvents')));
    for (const e of list) {
      const bits = [];
      if (e.from && e.to && e.from !== e.to) bits.push(`${stateLabel(e.from)} → ${stateLabel(e.to)}`);
      if (typeof e.value === 'number') bits.push(t('row.value', { v: fmtNum(e.value) }));
      events.append(h('li', { class: `ev ev-${e.action}`, 'data-testid': 'detail-event' },
        h('time', { class: 'ev-time' }, fmtDateTime(ms(e.at))),
        h('span', { class: 'ev-action' }, t(`ev.${e.action}`)),
        e.user ? h('span', { class: 'ev-user' }, e.user) : null,
        bits.length ? h('span', { class: 'ev-bits muted' }, bits.join(' · ')) : null,
        e.comment ? h('span', { class: 'ev-comment' }, e.comment) : null));
    }
  }

  // ---------------------------------------------------------------------
  // Devices.

  function renderDevices() {
    const devices = state.devices;
    // Counts from the list itself, so that stream updates keep them right;
    // the server's counts only stand in while the list is empty.
    const counts = {};
    for (const k of KINDS) counts[k] = { online: 0, offline: 0 };
    if (devices.length) {
      for (const d of devices) {
        const c = counts[d.kind] || (counts[d.kind] = { online: 0, offline: 0 });
        c[d.online ? 'online' : 'offline'] += 1;
      }
    } else if (state.deviceCounts) {
      for (const [k, c] of Object.entries(state.deviceCounts)) counts[k] = { online: c.online || 0, offline: c.offline || 0 };
    }

    const tiles = $('device-counts');
    clear(tiles);
    for (const [kind, c] of Object.entries(counts)) {
      const total = c.online + c.offline;
      tiles.append(h('div', {
        class: `kind-tile${c.offline ? ' has-offline' : ''}${total ? '' : ' empty'}`,
        'data-testid': 'kind-tile', 'data-kind': kind, 'data-online': c.online, 'data-offline': c.offline,
      },
      h('span', { class: 'kind-name' }, kindLabel(kind)),
      h('span', { class: 'kind-online' }, h('b', null, String(c.online)), h('span', { class: 'of' }, ` / ${total} `), t('devices.online')),
      h('span', { class: 'kind-offline' },
        total === 0 ? t('devices.noDevices') : c.offline ? [h('span', { class: 'warn-glyph', 'aria-hidden': 'true' }, '⚠'), ' ', t('devices.offlineN', { n: c.offline })] : t('devices.allOnline'))));
    }

    // Offline: smoke detectors first (a silent detector protects no one),
    // then the longest silent first.
    const offline = devices.filter((d) => !d.online).sort((a, b) =>
      (a.kind === 'smoke' ? 0 : 1) - (b.kind === 'smoke' ? 0 : 1) || (ms(a.last_seen) || 0) - (ms(b.last_seen) || 0));
    fillDeviceList($('offline-list'), offline, (d) => deviceItem(d, 'offline-device'), t('devices.noneOffline'));
    $('offline-count').textContent = String(offline.length);
    $('offline-count').classList.toggle('alert', offline.length > 0);

    const low = devices.filter(isLowBattery).sort((a, b) => a.fields.battery_pct - b.fields.battery_pct);
    fillDeviceList($('battery-list'), low, (d) => deviceItem(d, 'low-battery-device'), t('devices.noneLow'));
    $('battery-count').textContent = String(low.length);
    $('battery-count').classList.toggle('alert', low.length > 0);

    // Devices nobody declared: a spoofed gate or a detector the installer
    // forgot, either way the security room should know. Newest first.
    const undeclared = devices.filter((d) => d.declared === false).sort((a, b) => (ms(b.last_seen) || 0) - (ms(a.last_seen) || 0));
    fillDeviceList($('undeclared-list'), undeclared, (d) => deviceItem(d, 'undeclared-device'), t('devices.noneUndeclared'));
    $('undeclared-count').textContent = String(undeclared.length);
    $('undeclared-count').classList.toggle('alert', undeclared.length > 0);

    $('devices-updated').textContent = state.devicesAt ? t('alarms.updated', { t: fmtClock(new Date(state.devicesAt)) }) : '';
  }

  function isLowBattery(d) {
    const pct = d.fields && d.fields.battery_pct;
    return d.kind === 'smoke' && typeof pct === 'number' && pct < LOW_BATTERY_PCT;
  }

  function fillDeviceList(list, items, build, emptyText) {
    clear(list);
    if (!items.length) { list.append(h('li', { class: 'empty-note muted' }, emptyText)); return; }
    for (const d of items.slice(0, LIST_CAP)) list.append(build(d));
    if (items.length > LIST_CAP) list.append(h('li', { class: 'more muted' }, t('common.more', { n: items.length - LIST_CAP })));
  }

  function deviceItem(d, testid) {
    const seen = ms(d.last_seen);
    const place = devicePlace(d);
    const battery = isLowBattery(d) ? h('span', { class: 'battery' }, t('devices.battery', { n: Math.round(d.fields.battery_pct) })) : null;
    const undeclared = d.declared === false;
    return h('li', {
      class: `device-item${d.online ? '' : ' offline'}${undeclared ? ' undeclared' : ''}`, 'data-testid': testid,
      'data-device-id': d.id, 'data-kind': d.kind, 'data-site': d.site, 'data-undeclared': undeclared ? 'true' : null,
    },
      h('span', { class: 'kind-tag', title: kindLabel(d.kind) }, kindShort(d.kind)),
      h('span', { class: 'device-name' }, place || d.id,
        d.site ? h('span', { class: 'site-tag', title: t('f.site') }, d.site) : null,
        undeclared ? h('span', { class: 'undeclared-tag', 'data-testid': 'undeclared-tag', title: t('row.undeclaredHint') }, `⚠ ${t('row.undeclared')}`) : null),
      battery,
      h('span', { class: 'device-seen muted' },
        place ? h('span', { class: 'device-id' }, d.id) : null,
        seen === null ? t('ago.never') : [t('devices.lastSeen', { t: '' }),
          h('span', { class: 'js-ago', 'data-at': seen }, fmtAgo(seen)), ` · ${fmtTime(seen)}`]));
  }

  /** A `device` stream event: online state changed. */
  function onDeviceEvent(ev) {
    const d = state.devices.find((x) => x.id === ev.id && x.site === ev.site);
    if (d) {
      d.online = !!ev.online;
      if (ev.last_seen !== undefined) d.last_seen = ev.last_seen;
    } else {
      // A device never seen before: undeclared, most likely. The event has
      // no `declared`, so the list is fetched for it (and its marks).
      state.devices.push({ id: ev.id, site: ev.site, kind: ev.kind, online: !!ev.online, last_seen: ev.last_seen || null, location: null, fields: {} });
      later('devices-refetch', refreshDevices, 500);
    }
    const bus = ev.kind === 'bus' && state.buses.find((b) => b.id === ev.id && b.site === ev.site);
    if (bus) { bus.online = !!ev.online; bus.last_seen = ev.last_seen || bus.last_seen; later('buses', renderBuses, 300); }
    later('devices', renderDevices, 300);
  }

  // Coalesces bursts of stream events into one render per panel.
  const pending = new Map();
  function later(name, fn, wait) {
    if (pending.has(name)) return;
    pending.set(name, setTimeout(() => { pending.delete(name); fn(); }, wait));
  }

  // ---------------------------------------------------------------------
  // Buses: a plain SVG drawing, no map tiles (the campus network is closed).

  const MAP_W = 600;
  const MAP_H = 260;
  const MAP_PAD = 30;        // around the drawing
  const MAP_PAD_BOTTOM = 46; // room for the scale bar

  const hasPos = (b) => typeof b.lat === 'number' && typeof b.lon === 'number' && Number.isFinite(b.lat) && Number.isFinite(b.lon);

  function compClass(c) {
    if (!c) return 'comp-none';
    return c.state === 'ok' ? 'comp-ok' : 'comp-bad';
  }

  function busLabel(b) {
    // "校车7号 (川L·0707)" -> "校车7号": short enough for the map.
    const name = (b.name || '').split(/[\svg(（]/)[0];
    return name && name.length <= 8 ? name : b.id;
  }

  /**
   * Local equirectangular projection: metres east/north of the box's corner,
   * scaled to fit the drawing. Exact enough for a town-sized area.
   */
  function projection(points) {
    let minLat = Infinity, maxLat = -Infinity, minLon = Infinity, maxLon = -Infinity;
    for (const [lat, lon] of points) {
      minLat = Math.min(minLat, lat); maxLat = Math.max(maxLat, lat);
      minLon = Math.min(minLon, lon); maxLon = Math.max(maxLon, lon);
    }
    const midLat = (minLat + maxLat) / 2;
    const mPerLat = 111320;
    const mPerLon = 111320 * Math.cos((midLat * Math.PI) / 180);
    // At least 600 m across, so one bus alone is not drawn at an absurd zoom.
    const wM = Math.max((maxLon - minLon) * mPerLon, 600);
    const hM = Math.max((maxLat - minLat) * mPerLat, 300);
    const innerH = MAP_H - MAP_PAD - MAP_PAD_BOTTOM;
    const scale = Math.min((MAP_W - 2 * MAP_PAD) / wM, innerH / hM); // px per metre
    const cx = (minLon + maxLon) / 2;
    const cy = (minLat + maxLat) / 2;
    const midY = MAP_PAD + innerH / 2;
    return {
      scale,
      xy(lat, lon) {
        return [MAP_W / 2 + (lon - cx) * mPerLon * scale, midY - (lat - cy) * mPerLat * scale];
      },
    };
  }

  /** The largest "nice" length that fits in a fifth of the drawing. */
  function niceLength(pxPerMetre) {
    const target = MAP_W / 5 / pxPerMetre;
    const steps = [50, 100, 200, 250, 500, 1000, 2000, 2500, 5000, 10000, 20000, 50000, 100000];
    let best = steps[0];
    for (const v of steps) if (v <= target) best = v;
    return best;
  }

  function renderBuses() {
    drawBusMap();
    const list = $('bus-list');
    clear(list);
    const buses = state.buses.slice().sort((a, b) => busLabel(a).localeCompare(busLabel(b), 'zh-CN', { numeric: true }));
    if (!buses.length) list.append(h('li', { class: 'empty-note muted' }, t('buses.none')));
    const routeName = new Map(state.routes.map((r) => [r.id, r.name]));
    for (const b of buses) {
      const comp = b.compliance;
      const seen = ms(b.last_seen);
      const stats = [];
      if (typeof b.speed_kmh === 'number') stats.push(h('span', { class: 'bus-speed' }, t('buses.speed', { v: Math.round(b.speed_kmh) })));
      if (typeof b.passengers === 'number') stats.push(h('span', { class: 'bus-pax' }, t('buses.passengers', { n: Math.round(b.passengers) })));
      // An open door matters while the bus moves.
      const moving = typeof b.speed_kmh === 'number' && b.speed_kmh > 3;
      if (b.door_open === true) stats.push(h('span', { class: `bus-door open${moving && b.online ? ' moving' : ''}` }, t('buses.doorOpen')));
      else if (b.door_open === false) stats.push(h('span', { class: 'bus-door' }, t('buses.doorClosed')));
      const route = b.route_id ? t('buses.route', { r: routeName.get(b.route_id) ? `${b.route_id} ${routeName.get(b.route_id)}` : b.route_id }) : t('buses.noRoute');
      list.append(h('li', {
        class: `bus-item ${compClass(comp)}${b.online ? '' : ' offline'}`,
        'data-testid': 'bus-item', 'data-bus-id': b.id, 'data-compliance': comp ? comp.state : 'none', 'data-online': b.online ? 'true' : 'false',
      },
      h('span', { class: 'bus-marker', 'aria-hidden': 'true' }),
      h('div', { class: 'bus-head' },
        h('span', { class: 'bus-name' }, b.name || b.id),
        h('span', { class: 'bus-route muted' }, route)),
      h('div', { class: 'bus-stats' }, stats.length ? stats : h('span', { class: 'muted' }, t('buses.noPosition'))),
      h('div', { class: 'bus-comp', 'data-testid': 'bus-compliance' },
        h('span', { class: 'comp-glyph', 'aria-hidden': 'true' }, comp ? (comp.state === 'ok' ? '✓' : '⚠') : '–'),
        comp ? t(`comp.${comp.state}`) : t('comp.none'),
        comp && comp.detail ? h('span', { class: 'comp-detail muted' }, ` · ${comp.detail}`) : null),
      h('div', { class: 'bus-seen muted' },
        b.online ? null : h('span', { class: 'offline-tag' }, `${t('buses.offline')} · `),
        seen === null ? t('ago.never') : h('span', { class: 'js-ago', 'data-at': seen }, fmtAgo(seen)))));
    }
    $('buses-updated').textContent = state.busesAt ? t('alarms.updated', { t: fmtClock(new Date(state.busesAt)) }) : '';
  }

  function drawBusMap() {
    const map = $('bus-map');
    clear(map);
    const buses = state.buses.filter(hasPos);
    const routes = state.routes.filter((r) => Array.isArray(r.points) && r.points.length > 1);
    const points = [];
    for (const r of routes) for (const p of r.points) if (Number.isFinite(p[0]) && Number.isFinite(p[1])) points.push(p);
    for (const b of buses) points.push([b.lat, b.lon]);

    map.append(svg('rect', { class: 'map-bg', x: 0, y: 0, width: MAP_W, height: MAP_H, rx: 6 }));
    if (!points.length) {
      map.append(svg('text', { class: 'map-empty', x: MAP_W / 2, y: MAP_H / 2, 'text-anchor': 'middle' }, t('buses.noPosition')));
      return;
    }
    const proj = projection(points);
    const step = niceLength(proj.scale);
    const stepPx = step * proj.scale;

    // A faint grid at the scale bar's spacing stands in for a base map.
    const grid = svg('g', { class: 'map-grid' });
    for (let x = MAP_W / 2 % stepPx; x < MAP_W; x += stepPx) grid.append(svg('line', { x1: x, y1: 0, x2: x, y2: MAP_H }));
    for (let y = MAP_H / 2 % stepPx; y < MAP_H; y += stepPx) grid.append(svg('line', { x1: 0, y1: y, x2: MAP_W, y2: y }));
    map.append(grid);

    // Labels are placed one by one where they overlap nothing drawn so far.
    const labels = new LabelPlacer();
    const busXY = buses.map((b) => proj.xy(b.lat, b.lon));
    for (const [x, y] of busXY) labels.block(x - 10, y - 10, x + 10, y + 10);
    labels.block(0, MAP_H - 36, 16 + stepPx + 10, MAP_H); // scale bar
    labels.block(MAP_W - 40, 0, MAP_W, 50);               // north arrow

    routes.forEach((r, i) => {
      const pts = r.points.filter((p) => Number.isFinite(p[0]) && Number.isFinite(p[1])).map((p) => proj.xy(p[0], p[1]));
      const d = pts.map((p) => `${p[0].toFixed(1)},${p[1].toFixed(1)}`).join(' ');
      map.append(svg('polyline', { class: `map-route route-${i % 4}`, points: d, 'data-route-id': r.id }));
      const text = r.id + (r.name ? ` ${r.name}` : '');
      const [lx, ly] = pts[0];
      const at = labels.place(lx, ly, text, 13, [[6, -7, 'start'], [-6, -7, 'end'], [6, 16, 'start'], [-6, 16, 'end']]);
      map.append(svg('text', { class: `map-route-label route-${i % 4}`, x: at.x, y: at.y, 'text-anchor': at.anchor }, text));
    });

    buses.forEach((b, i) => {
      const [x, y] = busXY[i];
      const g = svg('g', {
        class: `map-bus ${compClass(b.compliance)}${b.online ? '' : ' offline'}`,
        transform: `translate(${x.toFixed(1)} ${y.toFixed(1)})`, 'data-bus-id': b.id,
      });
      g.append(svg('title', null, `${b.name || b.id}`));
      if (typeof b.heading_deg === 'number' && b.online) {
        // Heading: 0° is north, clockwise, which is SVG's rotate() on a y-down canvas.
        g.append(svg('path', { class: 'bus-heading', d: 'M0 -20 L6 -10 L-6 -10 Z', transform: `rotate(${Math.round(b.heading_deg)})` }));
      }
      g.append(svg('circle', { class: 'bus-dot', r: 8 }));
      // First choice: the side the bus is not heading to (the arrow is there).
      const east = typeof b.heading_deg === 'number' && b.online && Math.sin((b.heading_deg * Math.PI) / 180) > 0.35;
      const right = [[14, 5, 'start'], [14, 22, 'start'], [14, -11, 'start']];
      const left = [[-14, 5, 'end'], [-14, 22, 'end'], [-14, -11, 'end']];
      const text = busLabel(b);
      const at = labels.place(x, y, text, 15, east ? [...left, ...right] : [...right, ...left]);
      g.append(svg('text', { class: 'bus-label', x: (at.x - x).toFixed(1), y: (at.y - y).toFixed(1), 'text-anchor': at.anchor }, text));
      map.append(g);
    });

    // Scale bar and north arrow.
    const sx = 16;
    const sy = MAP_H - 16;
    map.append(svg('g', { class: 'map-scale' },
      svg('path', { d: `M${sx} ${sy - 5} V${sy} H${sx + stepPx} V${sy - 5}` }),
      svg('text', { x: sx + stepPx / 2, y: sy - 8, 'text-anchor': 'middle' },
        step >= 1000 ? t('map.km', { n: step / 1000 }) : t('map.m', { n: step }))));
    map.append(svg('g', { class: 'map-north', transform: `translate(${MAP_W - 22} 26)` },
      svg('path', { d: 'M0 -14 L6 4 L0 0 L-6 4 Z' }),
      svg('text', { x: 0, y: 18, 'text-anchor': 'middle' }, t('map.north'))));
  }

  /** Greedy label placement: the first candidate spot that overlaps nothing placed yet. */
  class LabelPlacer {
    constructor() { this.boxes = []; }

    block(x1, y1, x2, y2) { this.boxes.push({ x1, y1, x2, y2 }); }

    /** `spots` are [dx, dy, anchor] from (x, y); returns the chosen {x, y, anchor}. */
    place(x, y, text, px, spots) {
      // Rough width: CJK characters are square, Latin ones about 0.6 em.
      let w = 0;
      for (const ch of text) w += ch.codePointAt(0) > 0x2e80 ? px : px * 0.6;
      const boxFor = ([dx, dy, anchor]) => {
        const tx = x + dx;
        const ty = y + dy;
        const x1 = anchor === 'end' ? tx - w : tx;
        return { x: tx, y: ty, anchor, box: { x1, y1: ty - px, x2: x1 + w, y2: ty + 3 } };
      };
      const fits = (b) => b.x1 >= 2 && b.x2 <= MAP_W - 2 && b.y1 >= 2 && b.y2 <= MAP_H - 2 &&
        !this.boxes.some((o) => b.x1 < o.x2 && b.x2 > o.x1 && b.y1 < o.y2 && b.y2 > o.y1);
      const candidates = spots.map(boxFor);
      const chosen = candidates.find((c) => fits(c.box)) || candidates.find((c) => c.box.x1 >= 2 && c.box.x2 <= MAP_W - 2) || candidates[0];
      this.boxes.push(chosen.box);
      return chosen;
    }
  }

  /** A `bus` stream event: a new position. */
  function onBusEvent(ev) {
    let b = state.buses.find((x) => x.id === ev.id && x.site === ev.site);
    if (!b) {
      b = { id: ev.id, site: ev.site, name: null, compliance: null };
      state.buses.push(b);
    }
    for (const k of ['lat', 'lon', 'speed_kmh', 'heading_deg', 'passengers', 'door_open', 'route_id']) {
      if (ev[k] !== undefined && ev[k] !== null) b[k] = ev[k];
    }
    if (ev.ts) b.last_seen = ev.ts;
    b.online = true;
    later('buses', renderBuses, 500);
  }

  // ---------------------------------------------------------------------
  // History of cleared alarms and the ledger download.

  /** The chosen range as instants: local midnight of `from` to the end of `to`. */
  function historyRange() {
    const from = localDate($('history-from').value);
    const to = localDate($('history-to').value);
    if (!from || !to) return null;
    const end = new Date(to.getFullYear(), to.getMonth(), to.getDate() + 1);
    if (from >= end) return null;
    return { since: from.toISOString(), until: end.toISOString(), fromText: $('history-from').value, toText: $('history-to').value };
  }

  function localDate(value) {
    const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(value || '');
    return m ? new Date(Number(m[1]), Number(m[2]) - 1, Number(m[3])) : null;
  }

  function dateValue(d) {
    return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())}`;
  }

  function updateLedgerLink() {
    const link = $('ledger-download');
    const range = historyRange();
    if (!range) {
      link.removeAttribute('href');
      link.setAttribute('aria-disabled', 'true');
      return;
    }
    link.setAttribute('href', `/api/reports/ledger.csv?from=${encodeURIComponent(range.since)}&to=${encodeURIComponent(range.until)}`);
    link.setAttribute('download', `ledger-${range.fromText.replace(/-/g, '')}-${range.toText.replace(/-/g, '')}.csv`);
    link.removeAttribute('aria-disabled');
  }

  function fillSelect(select, options, keep) {
    const value = select.options.length ? select.value : keep;
    clear(select);
    for (const [v, label] of options) select.append(h('option', { value: v }, label));
    if (options.some(([v]) => v === value)) select.value = value;
  }

  function fillSelects() {
    fillSelect($('history-severity'), [['', t('history.all')], ...SEVERITIES.map((v) => [v, sevLabel(v)])], '');
    fillSelect($('history-kind'), [['', t('history.all')], ...KINDS.map((v) => [v, kindLabel(v)])], '');
    // History opens on every state: an operator looking back wants the open
    // alarms of the range too (filtered to "cleared" it showed 1 of 12).
    fillSelect($('history-state'), [['', t('history.allStates')], ['cleared', t('history.clearedOnly')],
      ...['unacked', 'acked', 'cleared_unacked', 'shelved'].map((v) => [v, stateLabel(v)])], '');
    fillSelect($('shelve-minutes'), SHELVE_MINUTES.map((n) => [String(n), fmtMinutes(n)]), '30');
    fillSelect($('drill-minutes'), DRILL_MINUTES.map((n) => [String(n), fmtMinutes(n)]), '60');
  }

  async function loadHistory() {
    const err = $('history-error');
    const range = historyRange();
    if (!range) {
      err.textContent = t('history.badRange');
      err.hidden = false;
      return;
    }
    err.hidden = true;
    $('history-note').textContent = t('history.loading');
    const q = `state=all&since=${encodeURIComponent(range.since)}&until=${encodeURIComponent(range.until)}&limit=${state.historyLimit}`;
    try {
      const data = await api(`/api/alarms?${q}`);
      state.history = Array.isArray(data && data.alarms) ? data.alarms : [];
      state.historyFetched = state.history.length;
      renderHistory();
    } catch (e) {
      $('history-note').textContent = '';
      err.textContent = e.message;
      err.hidden = false;
    }
  }

  /** Filters apply on the fetched range, so changing them needs no request. */
  function filteredHistory() {
    const sev = $('history-severity').value;
    const kind = $('history-kind').value;
    const st = $('history-state').value;
    const text = $('history-text').value.trim().toLowerCase();
    return state.history.filter((a) => {
      if (sev && a.severity !== sev) return false;
      if (kind && a.kind !== kind) return false;
      if (st && a.state !== st) return false;
      if (text) {
        const hay = [a.message, ...Object.values(a.messages || {}), alarmName(a), a.location, a.device, a.rule, a.site, a.building, a.room, a.acked_by, a.shelve_reason, a.suppressed, alarmPlace(a)]
          .filter(Boolean).join(' ').toLowerCase();
        if (!hay.includes(text)) return false;
      }
      return true;
    });
  }

  function renderHistory() {
    const body = $('history-body');
    clear(body);
    if (!state.me) return;
    const rows = filteredHistory();
    for (const a of rows) {
      const raised = ms(a.raised_at);
      const cleared = ms(a.cleared_at);
      body.append(h('tr', {
        class: `history-row sev-${a.severity}`, tabindex: 0,
        'data-testid': 'history-row', 'data-alarm-id': a.id, 'data-severity': a.severity, 'data-state': a.state, 'data-kind': a.kind,
        onclick: () => openDetail(a.id),
        onkeydown: (ev) => { if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); openDetail(a.id); } },
      },
      h('td', null, sevBadge(a.severity)),
      h('td', { class: 'nowrap' }, fmtDateTime(raised)),
      h('td', { class: 'nowrap' }, cleared === null ? t('common.none') : fmtDateTime(cleared)),
      h('td', { class: 'nowrap' }, raised !== null && cleared !== null ? fmtDuration(cleared - raised) : t('common.none')),
      h('td', null, kindLabel(a.kind)),
      h('td', null, alarmPlace(a), a.site ? h('span', { class: 'site-tag' }, a.site) : null,
        isUndeclared(a) ? h('span', { class: 'undeclared-tag' }, t('row.undeclared')) : null),
      h('td', { class: 'msg' }, alarmText(a)),
      h('td', null, a.acked_by ? `${a.acked_by} · ${fmtTime(ms(a.acked_at))}` : t('common.none')),
      h('td', null, h('span', { class: `state-chip chip-${a.state}` }, stateLabel(a.state)))));
    }
    if (!rows.length) {
      body.append(h('tr', { class: 'empty-row' }, h('td', { colspan: 9, class: 'muted' }, t('history.empty'))));
    }
    let note = rows.length === state.historyFetched
      ? t('history.count', { n: rows.length })
      : t('history.countOf', { n: rows.length, total: state.historyFetched });
    if (state.historyFetched >= state.historyLimit) note += ` ${t('history.limit', { n: state.historyLimit })}`;
    $('history-note').textContent = note;
  }

  // ---------------------------------------------------------------------
  // Live stream. EventSource reconnects by itself after a network error;
  // after an HTTP error (session ended, proxy 502) it gives up, so then we
  // check the session and open a new one.

  let stream = null;
  let streamRetry = null;

  function connectStream() {
    stopStream();
    const es = new EventSource('/api/stream');
    stream = es;
    es.addEventListener('open', () => {
      if (stream !== es) return;
      setConnected(true);
      // Whatever happened while we were away (or before the stream was up)
      // is fetched afresh; the stream carries only changes.
      refreshAll();
    });
    es.addEventListener('error', () => {
      if (stream !== es) return;
      setConnected(false);
      if (es.readyState === EventSource.CLOSED) {
        stopStream();
        streamRetry = setTimeout(async () => {
          streamRetry = null;
          try {
            await api('/api/me');
            if (state.me) connectStream();
          } catch (err) {
            if (err.status === 401) sessionLost();
            else if (state.me) connectStream();
          }
        }, 5000);
      }
    });
    es.addEventListener('lagged', () => refreshAll());
    es.addEventListener('alarm', (e) => {
      const data = parse(e.data);
      if (data && data.alarm) {
        mergeAlarms([data.alarm]);
        if (data.alarm.kind === 'bus') later('bus-refetch', refreshBuses, 1000);
      }
      scheduleActiveRefetch();
    });
    es.addEventListener('devices', (e) => { for (const d of parse(e.data) || []) onDeviceEvent(d); });
    es.addEventListener('bus', (e) => { const d = parse(e.data); if (d) onBusEvent(d); });
  }

  function parse(text) {
    try { return JSON.parse(text); } catch { return null; }
  }

  function stopStream() {
    if (streamRetry) { clearTimeout(streamRetry); streamRetry = null; }
    if (stream) { stream.close(); stream = null; }
  }

  function setConnected(ok) {
    if (ok === state.connected) return;
    state.connected = ok;
    state.lostSince = ok ? null : Date.now();
    $('connection-banner').hidden = ok;
    document.body.classList.toggle('disconnected', !ok);
    $('connection-detail').textContent = ok ? '' : t('conn.since', { t: fmtClock(new Date()) });
  }

  // ---------------------------------------------------------------------
  // Annunciation: what makes a person look up at 3 am.
  //
  //  - An unacknowledged critical or high alarm (not shelved, not in a
  //    drill) sounds, and keeps sounding, until it is acknowledged or the
  //    sound is muted for MUTE_MINUTES; a new one ends a mute. Critical and
  //    high have patterns of their own. A cleared alarm nobody acknowledged
  //    still sounds: nobody has seen it.
  //  - A lost event stream (the page no longer sees new alarms, for as long
  //    as reconnecting fails) and an ended session sound a third pattern,
  //    after a short grace for blips.
  //  - A banner across the top, whatever the scroll position, names the most
  //    urgent of those alarms until it is acknowledged or dismissed.
  //  - Browsers keep audio locked until someone clicks or types on the page
  //    (again after every reload); the page says so plainly. A kiosk started
  //    with --autoplay-policy=no-user-gesture-required needs no click.
  // window.__campusgwSound counts the patterns started (`plays`) and those
  // the browser would not play (`blocked`), so a test can see the repeat
  // without timing anything; it holds counts only.

  const MUTE_MINUTES = 5;
  const CONN_GRACE_MS = 5000;
  const SOUNDING = ['critical', 'high'];

  // Each pattern: oscillator type, gain, notes as [Hz, start s, length s],
  // and how often it repeats, ms.
  const PATTERNS = {
    // A fast falling two-tone, like an evacuation signal.
    critical: {
      type: 'square', gain: 0.16, every: 4000,
      notes: [[988, 0, 0.22], [740, 0.25, 0.22], [988, 0.5, 0.22], [740, 0.75, 0.22], [988, 1.0, 0.22], [740, 1.25, 0.22]],
    },
    // Two long, even beeps.
    high: { type: 'triangle', gain: 0.35, every: 8000, notes: [[784, 0, 0.45], [784, 0.7, 0.45]] },
    // Three slow steps down: the line is dead.
    connection: { type: 'sawtooth', gain: 0.12, every: 10000, notes: [[523, 0, 0.4], [392, 0.5, 0.4], [262, 1.0, 0.7]] },
  };

  const sound = { ctx: null, mutedUntil: Number(store.get(MUTE_KEY)) || 0, next: 0, turn: 0, playing: [] };
  const soundHook = { plays: 0, blocked: 0, pattern: null, last: null, audio: 'none', muted: false };
  window.__campusgwSound = soundHook;

  function initSound() {
    const AC = window.AudioContext || window.webkitAudioContext;
    if (AC) {
      try {
        sound.ctx = new AC();
        sound.ctx.addEventListener('statechange', () => { updateSoundNotice(); annunciate(); });
      } catch { sound.ctx = null; }
    }
    const unlock = () => {
      if (sound.ctx && sound.ctx.state !== 'running') sound.ctx.resume().then(updateSoundNotice, () => {});
    };
    document.addEventListener('pointerdown', unlock, true);
    document.addEventListener('keydown', unlock, true);
    updateSoundNotice();
    updateMuteButton();
  }

  const audioReady = () => !!sound.ctx && sound.ctx.state === 'running';
  const mutedNow = () => Date.now() < sound.mutedUntil;

  /** Says plainly when the browser will not let the page make a sound, and what to do. */
  function updateSoundNotice() {
    const el = $('sound-banner');
    const show = (!!state.me || state.sessionLost) && !audioReady();
    el.hidden = !show;
    if (!show) return;
    $('sound-banner-what').textContent = sound.ctx ? t('sound.blocked') : t('sound.none');
    $('sound-banner-how').textContent = sound.ctx ? t('sound.blockedHow') : '';
    $('sound-banner-cmd').textContent = sound.ctx ? `chromium --kiosk --autoplay-policy=no-user-gesture-required ${window.location.origin}/` : '';
    $('sound-hint').hidden = !sound.ctx;
  }

  function updateMuteButton() {
    const b = $('mute-toggle');
    const muted = mutedNow();
    const left = Math.max(0, sound.mutedUntil - Date.now());
    clear(b);
    b.append(bellIcon(muted), h('span', null, muted
      ? t('sound.mutedLeft', { t: `${Math.floor(left / 60000)}:${pad2(Math.floor(left / 1000) % 60)}` })
      : t('sound.muteFor', { n: MUTE_MINUTES })));
    b.setAttribute('aria-pressed', muted ? 'true' : 'false');
    b.setAttribute('title', muted ? t('sound.toggleOff') : t('sound.toggleOn', { n: MUTE_MINUTES }));
    b.classList.toggle('is-muted', muted);
    b.dataset.muted = muted ? 'true' : 'false';
  }

  function bellIcon(muted) {
    const icon = svg('svg', { class: 'icon', viewBox: '0 0 24 24', 'aria-hidden': 'true' },
      svg('path', { d: 'M6 16V10a6 6 0 0 1 12 0v6l1.5 2h-15zM10 20.5a2.2 2.2 0 0 0 4 0' }));
    if (muted) icon.append(svg('path', { d: 'M3.5 3.5l17 17' }));
    return icon;
  }

  function setMutedUntil(until) {
    sound.mutedUntil = until;
    store.set(MUTE_KEY, String(until));
    soundHook.muted = mutedNow();
    updateMuteButton();
  }

  /** Mutes for MUTE_MINUTES, or ends the mute. */
  function toggleMute() {
    if (mutedNow()) {
      setMutedUntil(0);
      sound.next = 0;
      // Nothing to sound: a soft tone says the speakers work.
      if (!wantedPatterns().length) tone([660], 0.12, 0.12);
      annunciate();
    } else {
      setMutedUntil(Date.now() + MUTE_MINUTES * 60000);
      silence();
    }
  }

  function onSoundHint() {
    if (!sound.ctx) return;
    sound.ctx.resume().then(() => {
      updateSoundNotice();
      if (!wantedPatterns().length) tone([660], 0.12, 0.12);
      annunciate();
    }, () => {});
  }

  /** Plays `freqs` one after another, each `len` seconds, at `gain`: the speaker check. */
  function tone(freqs, len, gain) {
    if (!audioReady()) return;
    const ctx = sound.ctx;
    let at = ctx.currentTime + 0.02;
    for (const f of freqs) {
      const osc = ctx.createOscillator();
      const amp = ctx.createGain();
      osc.type = 'sine';
      osc.frequency.value = f;
      amp.gain.setValueAtTime(0.0001, at);
      amp.gain.exponentialRampToValueAtTime(gain, at + 0.015);
      amp.gain.exponentialRampToValueAtTime(0.0001, at + len);
      osc.connect(amp).connect(ctx.destination);
      osc.start(at);
      osc.stop(at + len + 0.05);
      at += len * 0.9;
    }
  }

  /** Starts pattern `name`; false when the browser keeps audio locked. */
  function play(name) {
    if (!audioReady()) return false;
    const p = PATTERNS[name];
    const ctx = sound.ctx;
    const t0 = ctx.currentTime + 0.02;
    silence();
    for (const [f, at, len] of p.notes) {
      const osc = ctx.createOscillator();
      const amp = ctx.createGain();
      osc.type = p.type;
      osc.frequency.value = f;
      amp.gain.setValueAtTime(0.0001, t0 + at);
      amp.gain.exponentialRampToValueAtTime(p.gain, t0 + at + 0.02);
      amp.gain.setValueAtTime(p.gain, t0 + at + len * 0.7);
      amp.gain.exponentialRampToValueAtTime(0.0001, t0 + at + len);
      osc.connect(amp).connect(ctx.destination);
      osc.start(t0 + at);
      osc.stop(t0 + at + len + 0.05);
      sound.playing.push(osc);
    }
    return true;
  }

  /** Stops a pattern midway (acknowledged, muted). */
  function silence() {
    for (const osc of sound.playing) {
      try { osc.stop(); } catch { /* already stopped */ }
    }
    sound.playing = [];
  }

  /**
   * The alarms that call for a person: unacknowledged critical or high ones,
   * not shelved or in a drill; a flood group's members stand for it.
   */
  function callingAlarms() {
    const out = [];
    for (const a of state.active) {
      if (isQuiet(a)) continue;
      const list = a.is_group && Array.isArray(a.members) && a.members.length ? a.members : [a];
      for (const m of list) if (SOUNDING.includes(m.severity) && needsAck(m) && !isQuiet(m)) out.push(m);
    }
    return out;
  }

  /** The patterns wanted now, most urgent first. */
  function wantedPatterns() {
    const out = [];
    if (state.me) {
      const calling = callingAlarms();
      if (calling.some((a) => a.severity === 'critical')) out.push('critical');
      else if (calling.length) out.push('high');
    }
    const lost = state.sessionLost ||
      (!!state.me && !state.connected && state.lostSince !== null && Date.now() - state.lostSince >= CONN_GRACE_MS);
    if (lost) out.push('connection');
    return out;
  }

  /** Starts the next pattern when one is due: every second and whenever the alarms change. */
  function annunciate() {
    const wanted = wantedPatterns();
    soundHook.pattern = wanted[0] || null;
    soundHook.muted = mutedNow();
    soundHook.audio = sound.ctx ? sound.ctx.state : 'none';
    if (!wanted.length) {
      if (sound.next) silence();
      sound.next = 0;
      return;
    }
    if (soundHook.muted || Date.now() < sound.next) return;
    // An alarm and a dead line take turns.
    const name = wanted[sound.turn++ % wanted.length];
    sound.next = Date.now() + PATTERNS[name].every;
    soundHook.last = name;
    if (play(name)) soundHook.plays += 1;
    else soundHook.blocked += 1;
  }

  function soundTick() {
    if (sound.mutedUntil && !mutedNow()) setMutedUntil(0);
    else if (sound.mutedUntil) updateMuteButton();
    annunciate();
  }

  // The banner: alarm ids the operator closed it for. An alarm that stops
  // calling (acknowledged) is forgotten, so its next raise shows again.
  const dismissed = new Set();
  let bannerSig = '';

  function renderBanner() {
    const el = $('alarm-banner');
    const calling = state.me ? callingAlarms() : [];
    const ids = new Set(calling.map((a) => a.id));
    for (const id of dismissed) if (!ids.has(id)) dismissed.delete(id);
    const shown = calling.filter((a) => !dismissed.has(a.id)).sort(byUrgency);
    if (!shown.length) {
      el.hidden = true;
      el.dataset.alarmId = '';
      bannerSig = '';
      return;
    }
    const a = shown[0];
    const raised = ms(a.raised_at);
    el.hidden = false;
    // Unchanged: left alone, so a screen reader does not announce it again.
    const sig = JSON.stringify([a, shown.length, lang, canAct(), isUndeclared(a)]);
    if (sig === bannerSig) return;
    bannerSig = sig;
    el.className = `alarm-banner sev-${a.severity}`;
    el.dataset.alarmId = String(a.id);
    el.dataset.severity = a.severity;
    const sev = $('alarm-banner-sev');
    clear(sev);
    sev.append(sevBadge(a.severity, { short: false }));
    $('alarm-banner-what').textContent = alarmText(a);
    const where = $('alarm-banner-where');
    clear(where);
    where.append(...placeParts(a));
    const when = $('alarm-banner-when');
    clear(when);
    when.append(fmtDateTime(raised), ' · ', h('span', { class: 'js-ago', 'data-at': raised }, fmtAgo(raised)));
    $('alarm-banner-more').textContent = shown.length > 1 ? t('banner.more', { n: shown.length - 1 }) : '';
    $('alarm-banner-ack').hidden = !canAct();
  }

  function bannerAlarm() {
    const id = Number($('alarm-banner').dataset.alarmId);
    return callingAlarms().find((a) => a.id === id) || null;
  }

  function dismissBanner() {
    for (const a of callingAlarms()) dismissed.add(a.id);
    renderBanner();
  }

  // Title flash: on while any critical alarm waits for acknowledgement.
  let flashOn = false;

  function unackedCritical() {
    return state.active.filter((a) => !isQuiet(a) && a.severity === 'critical' && needsAck(a)).length;
  }

  function updateTitle() {
    const n = state.me ? state.active.filter((a) => !isQuiet(a)).length : 0;
    const base = `${n ? t('title.count', { n }) : ''}${t('app.title')}`;
    document.title = flashOn && unackedCritical() ? `${t('title.critical')} (${unackedCritical()})` : base;
  }

  function flashTick() {
    flashOn = state.me ? !flashOn && unackedCritical() > 0 : false;
    updateTitle();
  }

  /**
   * Notices alarms that just started calling: a new raise, a member joining
   * a flood group, a re-raise after acknowledgement. They sound at once, and
   * end a mute (meant for the alarms that were already known).
   */
  function noticeNewAlarms(alarms, { silent = false, prune = false } = {}) {
    const all = [];
    for (const a of alarms) {
      all.push(a);
      if (Array.isArray(a.members)) all.push(...a.members);
    }
    let fresh = false;
    for (const a of all) {
      const before = state.lastState.get(a.id);
      if (!silent && SOUNDING.includes(a.severity) && a.state === 'unacked' && !isQuiet(a) && before !== 'unacked') fresh = true;
      state.lastState.set(a.id, a.state);
    }
    if (prune) {
      const ids = new Set(all.map((a) => a.id));
      for (const id of state.lastState.keys()) if (!ids.has(id)) state.lastState.delete(id);
    }
    if (fresh) {
      if (sound.mutedUntil) setMutedUntil(0);
      sound.next = 0;
      flashOn = false;
      flashTick();
    }
  }

  // ---------------------------------------------------------------------
  // Clocks: the header clock, live durations and "last seen" ages.

  function startClock() {
    const tick = () => { $('clock').textContent = fmtClock(new Date()); };
    tick();
    setInterval(tick, 1000);
    setInterval(flashTick, 1000);
    setInterval(soundTick, 1000);
    setInterval(updateAges, 10000);
    // A slow full refresh backs the stream up (a proxy that silently drops
    // events would otherwise leave the wall screen stale).
    setInterval(() => { if (state.me) { refreshAll(); } }, 60000);
  }

  function updateAges() {
    const now = Date.now();
    for (const el of document.querySelectorAll('.js-duration[data-from]')) {
      const from = Number(el.dataset.from);
      const to = el.dataset.to ? Number(el.dataset.to) : now;
      el.textContent = fmtDuration(to - from);
    }
    for (const el of document.querySelectorAll('.js-remaining[data-until]')) {
      el.textContent = fmtDuration(Number(el.dataset.until) - now);
    }
    for (const el of document.querySelectorAll('.js-ago[data-at]')) el.textContent = fmtAgo(Number(el.dataset.at));
  }

  function renderAll() {
    if (!state.me) return;
    $('user-role').textContent = t(`role.${state.me.role}`);
    rowCache.clear();
    renderAlarms();
    renderSuppressions();
    renderDevices();
    renderBuses();
    renderHistory();
    updateSoundNotice();
    renderBanner();
    if (!$('connection-banner').hidden) {
      $('connection-detail').textContent = t('conn.since', { t: fmtClock(new Date(state.lostSince || Date.now())) });
    }
  }

  // ---------------------------------------------------------------------
  // Wiring.

  function wireControls() {
    $('login-form').addEventListener('submit', onLoginSubmit);
    $('logout-button').addEventListener('click', onLogout);
    $('lang-switch').addEventListener('click', () => setLanguage(lang === 'zh' ? 'en' : 'zh'));
    $('mute-toggle').addEventListener('click', toggleMute);
    $('sound-hint').addEventListener('click', onSoundHint);
    $('alarm-banner-open').addEventListener('click', () => { const a = bannerAlarm(); if (a) openDetail(a.id); });
    $('alarm-banner-ack').addEventListener('click', () => { const a = bannerAlarm(); if (a) openAck(a); });
    $('alarm-banner-dismiss').addEventListener('click', dismissBanner);
    $('drill-button').addEventListener('click', openDrill);
    $('drill-building').addEventListener('change', fillDrillFloors);

    $('ack-form').addEventListener('submit', onAckSubmit);
    $('shelve-form').addEventListener('submit', onShelveSubmit);
    $('comment-form').addEventListener('submit', onCommentSubmit);
    $('drill-form').addEventListener('submit', onDrillSubmit);
    for (const dialog of document.querySelectorAll('dialog')) {
      for (const b of dialog.querySelectorAll('[data-role="cancel"]')) b.addEventListener('click', () => dialog.close());
      // A click on the backdrop (outside the box) closes it too.
      dialog.addEventListener('click', (ev) => { if (ev.target === dialog) dialog.close(); });
    }
    // Ctrl+Enter sends a comment from its textarea.
    for (const id of ['ack-comment', 'comment-text']) {
      $(id).addEventListener('keydown', (ev) => {
        if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); $(id).form.requestSubmit(); }
      });
    }

    const today = new Date();
    $('history-to').value = dateValue(today);
    $('history-from').value = dateValue(new Date(today.getFullYear(), today.getMonth(), today.getDate() - 6));
    updateLedgerLink();
    $('history-form').addEventListener('submit', (ev) => { ev.preventDefault(); loadHistory(); });
    for (const id of ['history-from', 'history-to']) {
      $(id).addEventListener('change', () => { updateLedgerLink(); loadHistory(); });
    }
    for (const id of ['history-severity', 'history-kind', 'history-state']) $(id).addEventListener('change', renderHistory);
    $('history-text').addEventListener('input', () => later('history-filter', renderHistory, 200));
    $('ledger-download').addEventListener('click', (ev) => {
      if (!historyRange()) {
        ev.preventDefault();
        $('history-error').textContent = t('history.badRange');
        $('history-error').hidden = false;
      }
    });
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
  else boot();
})();
