<?php
defined('BASEPATH') OR exit('No direct script access allowed');

$active_group = 'default';
$db['default'] = array('dsn' => '', 'hostname' => 'mysql.internal', 'dbdriver' => 'mysqli');
$db['default']['username'] = 'shop';
$db['default']['password'] = '@@R::A62:18@@';
$db['default']['database'] = 'shop';
